//! Progress of a long command (`rebuild-sightings`, the importers): a bar on a terminal, plain
//! lines otherwise (a log file, a pipe, CI), so that both a person and a log see how far it
//! got. One type for every long command.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

/// How often a plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// A progress report over `unit`s (`log records`, `values`).
pub struct Progress {
    what: &'static str,
    unit: &'static str,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: Instant,
    pos: u64,
    len: u64,
    message: String,
}

impl Progress {
    /// Starts reporting `what` (`rebuild`), counting `unit`s.
    pub fn new(what: &'static str, unit: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}}) {{msg}}"
                ))
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            what,
            unit,
            bar,
            started: now,
            last_line: now,
            pos: 0,
            len: 0,
            message: String::new(),
        }
    }

    /// Text shown after the counts (`1234 values applied`).
    pub fn set_message(&mut self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.clone());
        }
        self.message = message;
    }

    /// A line of its own (`file 2/4: shard-1.json.zst`), above the bar on a terminal.
    pub fn note(&self, line: &str) {
        let line = format!("{}: {line}", self.what);
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// `pos` of `len` done (`len` 0: unknown).
    pub fn set(&mut self, pos: u64, len: u64) {
        self.pos = pos;
        self.len = len;
        match &self.bar {
            Some(bar) => {
                bar.set_length(len);
                bar.set_position(pos);
            }
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.pos as f64 / secs;
        let of = if self.len > 0 {
            format!(
                "/{} ({:.0}%)",
                self.len,
                self.pos as f64 * 100.0 / self.len as f64
            )
        } else {
            String::new()
        };
        let msg = if self.message.is_empty() {
            String::new()
        } else {
            format!(", {}", self.message)
        };
        format!(
            "{}: {}{} {} in {:.0} s ({:.0}/s){msg}",
            self.what, self.pos, of, self.unit, secs, rate
        )
    }

    /// Ends the report (the bar stays on screen; a last plain line otherwise).
    pub fn finish(self) {
        match &self.bar {
            Some(bar) => bar.finish(),
            None => eprintln!("{}", self.line()),
        }
    }
}

/// The SightingDB import reports through the same progress as every long command.
impl sighthub_migrate::import::Progress for Progress {
    fn advanced(&mut self, bytes: u64, total: u64, values: u64) {
        self.set_message(format!("{values} values applied"));
        self.set(bytes, total);
    }

    fn file(&mut self, index: usize, count: usize, name: &str) {
        self.note(&format!("file {}/{count}: {name}", index + 1));
    }
}
