//! Log output: text for people, JSON lines for log pipelines, and journald-friendly either way.
//!
//! Text is `env_logger`'s line (timestamp, level, target, message, then `key=value` fields);
//! under systemd (`JOURNAL_STREAM` set) it drops the timestamp and colours, which the journal
//! adds and does not want, and starts each line with the syslog priority (`<3>`) so the journal
//! files it at the right level. JSON is one object per line: `timestamp`, `level`, `target`,
//! `message` and the record's fields (`reconciler`, `object`, `run`, …) as members.
//!
//! Architecture invariant: formatting only; installed once, by the binary.

use std::io::Write;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The syslog priority of a level, as the journal reads a `<N>` line prefix.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// The record's key-values as JSON members.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: log::kv::Key<'kvs>, value: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
        let v = if let Some(b) = value.to_bool() {
            serde_json::Value::Bool(b)
        } else if let Some(n) = value.to_i64() {
            serde_json::Value::from(n)
        } else if let Some(n) = value.to_u64() {
            serde_json::Value::from(n)
        } else if let Some(f) = value.to_f64() {
            serde_json::Value::from(f)
        } else {
            serde_json::Value::String(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
    }
}

/// One JSON line for `record` at `timestamp`.
pub fn json_line(record: &log::Record<'_>, timestamp: &str) -> String {
    let mut m = serde_json::Map::new();
    m.insert("timestamp".into(), timestamp.into());
    m.insert("level".into(), record.level().as_str().into());
    m.insert("target".into(), record.target().into());
    m.insert("message".into(), record.args().to_string().into());
    let mut fields = serde_json::Map::new();
    let _ = record.key_values().visit(&mut Fields(&mut fields));
    for (k, v) in fields {
        // The four above are the line's own; a field of the same name does not replace them.
        m.entry(k).or_insert(v);
    }
    serde_json::Value::Object(m).to_string()
}

/// The text line under the journal: priority, target, message, fields; no timestamp.
fn journal_line(record: &log::Record<'_>) -> String {
    struct Text(String);
    impl<'kvs> log::kv::VisitSource<'kvs> for Text {
        fn visit_pair(&mut self, k: log::kv::Key<'kvs>, v: log::kv::Value<'kvs>) -> Result<(), log::kv::Error> {
            self.0.push_str(&format!(" {k}={v}"));
            Ok(())
        }
    }
    let mut fields = Text(String::new());
    let _ = record.key_values().visit(&mut fields);
    format!("<{}>{}: {}{}", priority(record.level()), record.target(), record.args(), fields.0)
}

/// Now, as JSON lines say it (UTC, milliseconds).
fn timestamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The format installed (text until `init` says otherwise).
static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Prints a line the server always shows, whatever the log level (that it listens, that it
/// stopped): plain text, or a JSON line with `--log-format json`.
pub fn announce(target: &str, message: &str) {
    match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => {
            let args = format_args!("{message}");
            let record = log::Record::builder().args(args).level(log::Level::Info).target(target).build();
            eprintln!("{}", json_line(&record, &timestamp()));
        }
    }
}

/// Installs the logger: `level` unless `RUST_LOG` says otherwise.
pub fn init(level: &str, format: LogFormat) {
    let _ = FORMAT.set(format);
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    match (format, journal) {
        (LogFormat::Json, _) => {
            b.format(|buf, record| writeln!(buf, "{}", json_line(record, &timestamp())));
        }
        (LogFormat::Text, true) => {
            b.write_style(env_logger::WriteStyle::Never)
                .format(|buf, record| writeln!(buf, "{}", journal_line(record)));
        }
        (LogFormat::Text, false) => {
            b.format_timestamp_millis();
        }
    }
    b.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_carry_the_fields() {
        let kvs: &[(&str, log::kv::Value<'_>)] = &[("reconciler", "r1".into()), ("reconciles", 12u64.into())];
        let args = format_args!("run finished");
        let record =
            log::Record::builder().args(args).level(log::Level::Info).target("choreo::engine").key_values(&kvs).build();
        let line: serde_json::Value = serde_json::from_str(&json_line(&record, "2026-01-01T00:00:00.000Z")).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"timestamp": "2026-01-01T00:00:00.000Z", "level": "INFO", "target": "choreo::engine",
                "message": "run finished", "reconciler": "r1", "reconciles": 12})
        );
        let text = journal_line(&record);
        assert_eq!(text, "<6>choreo::engine: run finished reconciler=r1 reconciles=12");
    }
}
