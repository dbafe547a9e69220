//! What the account commands print: plain aligned columns for people, or the API's JSON answer as it
//! came (`--json`) for scripts.

use serde_json::Value;

/// `--json`, declared once per command group and valid anywhere after the group's name.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct Output {
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Pretty-prints an API answer; an empty answer (`204`) prints nothing.
pub fn print_json(answer: &Value) -> anyhow::Result<()> {
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(answer)?);
    }
    Ok(())
}

/// One value as a table cell: strings as given, missing or `null` as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows under upper-case headers, columns two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (c, w) in row.iter().zip(&widths) {
            line.push_str(c);
            line.extend(std::iter::repeat_n(' ', w - c.chars().count() + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `name:  value` lines with the values aligned, for one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    pairs.iter().map(|(k, v)| format!("{k}:{:pad$} {v}\n", "", pad = width - k.chars().count())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![vec!["1".into(), "alice".into(), "yes".into()], vec!["22".into(), "é".into(), String::new()]];
        assert_eq!(table(&["ID", "NAME", "ADMIN"], &rows), "ID  NAME   ADMIN\n1   alice  yes\n22  é\n");
    }

    #[test]
    fn fields_align_values() {
        assert_eq!(fields(&[("user", "a".into()), ("expires", "b".into())]), "user:    a\nexpires: b\n");
    }

    #[test]
    fn cells() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&serde_json::json!("x")), "x");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }
}
