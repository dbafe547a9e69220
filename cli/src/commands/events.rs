//! `edd events tail` and `edd events schema`.

use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use clap::Subcommand;
use futures_util::StreamExt;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Print events as they arrive (and optionally from the past).
    Tail {
        /// Subject filter, e.g. `auth.user.>` or `log.error.*`.
        filter: String,
        /// Start at this stream sequence.
        #[arg(long, conflicts_with = "since")]
        from_seq: Option<u64>,
        /// Start this far back: `30s`, `10m`, `2h`, `7d`.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per line instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Regenerate docs/asyncapi.yaml from the event types (or print it with --stdout).
    Schema {
        #[arg(long, default_value = "docs/asyncapi.yaml")]
        out: std::path::PathBuf,
        #[arg(long)]
        stdout: bool,
    },
}

pub async fn run(common: &edd_kit::CommonArgs, cmd: EventsCommand) -> Result<()> {
    match cmd {
        EventsCommand::Schema { out, stdout } => {
            let doc = edd_events::schema::asyncapi_yaml();
            if stdout {
                print!("{doc}");
            } else {
                std::fs::write(&out, doc).with_context(|| format!("writing {}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
            Ok(())
        }
        EventsCommand::Tail { filter, from_seq, since, json } => {
            let stream = edd_events::streams::stream_for_subject(&filter)
                .with_context(|| format!("no stream holds subjects like {filter:?}"))?;
            let deliver = match (from_seq, since) {
                (Some(seq), _) => DeliverPolicy::ByStartSequence { start_sequence: seq.max(1) },
                (None, Some(s)) => {
                    let ago = parse_duration(&s)?;
                    let start = time::OffsetDateTime::now_utc() - ago;
                    DeliverPolicy::ByStartTime { start_time: start }
                }
                (None, None) => DeliverPolicy::New,
            };
            let js = super::connect_nats(&common.nats_url).await?;
            let consumer = js
                .get_stream(stream.name)
                .await?
                .create_consumer(pull::OrderedConfig {
                    filter_subject: filter,
                    deliver_policy: deliver,
                    ..Default::default()
                })
                .await?;
            let mut messages = consumer.messages().await?;
            while let Some(msg) = messages.next().await {
                let msg = msg?;
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                match edd_events::RawEvent::parse(seq, msg.subject.as_str(), &msg.payload) {
                    Ok(event) if json => println!(
                        "{}",
                        serde_json::json!({ "seq": seq, "subject": event.subject, "event": event.envelope })
                    ),
                    Ok(event) => println!(
                        "{seq:>8} {} {:<28} {} {}",
                        event.envelope.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                        event.ty(),
                        event.subject,
                        event.envelope.data
                    ),
                    Err(e) => eprintln!("{seq:>8} malformed: {e}"),
                }
            }
            Ok(())
        }
    }
}

/// `90s`, `10m`, `2h`, `7d`.
fn parse_duration(s: &str) -> Result<time::Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num.parse().with_context(|| format!("{s:?} is not a duration like 10m"))?;
    let secs = match unit {
        "s" => n,
        "m" | "" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("unknown unit in {s:?}: use s, m, h or d"),
    };
    Ok(time::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse() {
        assert_eq!(super::parse_duration("10m").unwrap(), time::Duration::minutes(10));
        assert_eq!(super::parse_duration("2h").unwrap(), time::Duration::hours(2));
        assert!(super::parse_duration("ten").is_err());
        assert!(super::parse_duration("5y").is_err());
    }
}
