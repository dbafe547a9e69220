//! What the benchmark binaries share: the results table and how figures are written in it.

/// The results table; each row is also printed to stderr as it is measured, so an aborted run still
/// shows what it got.
pub struct Rows {
    bench: &'static str,
    rows: Vec<(String, String)>,
}

impl Rows {
    /// A table for the benchmark `bench` (its name prefixes the progress lines).
    pub fn new(bench: &'static str) -> Self {
        Self { bench, rows: Vec::new() }
    }

    pub fn push(&mut self, row: (String, String)) {
        eprintln!("{}: {}: {}", self.bench, row.0.trim(), row.1);
        self.rows.push(row);
    }

    pub fn print(&self) {
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        println!("\n{:width$}  result", "measurement");
        for (k, v) in &self.rows {
            println!("{k:width$}  {v}");
        }
    }
}

/// Bytes per second as MiB/s.
pub fn mibs(bytes_per_sec: f64) -> String {
    format!("{:.0} MiB/s", bytes_per_sec / (1024.0 * 1024.0))
}

/// `value` as a multiple of `base`, and whether it reaches `goal`.
pub fn ratio(value: f64, base: f64, goal: f64) -> String {
    let r = value / base;
    format!("{r:.2}x of the base (goal {goal}x: {})", if r >= goal { "met" } else { "MISSED" })
}
