//! memprof's log lines. Much of what they name comes from watched processes — their names,
//! paths inside their roots, what their endpoints answered — and a process chooses those
//! bytes: an escape sequence or a carriage return in a log line would rewrite what an operator
//! sees, a newline would forge a line. So every field and message is written with control
//! characters escaped (`\u{1b}`, `\r`, `\n`), one event per line. In JSON (`MEMPROF_LOG_FORMAT=
//! json`) the encoder escapes control characters in every string itself.
use std::fmt;

use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        format::{DefaultFields, Writer},
        FormatFields,
    },
};

/// Logs to standard error (`to_stderr`, the commands' way: stdout is their output) or standard
/// output (the daemon's), at `default_level` unless `RUST_LOG` says otherwise, as text or as
/// `json`.
pub fn init(default_level: &str, to_stderr: bool, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    let ansi = if to_stderr {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    } else {
        std::io::IsTerminal::is_terminal(&std::io::stdout())
    };
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stderr {
            Box::new(std::io::stderr())
        } else {
            Box::new(std::io::stdout())
        }
    };
    if !json {
        logs.fmt_fields(Escaped)
            .with_ansi(ansi)
            .with_writer(writer)
            .init();
    } else {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .init();
    }
}

/// The default field format, control characters escaped.
struct Escaped;

impl<'w> FormatFields<'w> for Escaped {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut plain = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut plain), fields)?;
        writer.write_str(&escape(&plain))
    }
}

/// `text` with every control character escaped as Rust writes it, and the characters that
/// move or reorder text without being control characters: line and paragraph separators, and
/// the bidirectional overrides and isolates.
pub fn escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if unprintable(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A control character, or one that moves or reorders the text around it (line and paragraph
/// separators, bidirectional overrides and isolates): what no tenant's name may print as is.
pub fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}')
        || matches!(c, '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn names_and_messages_cannot_forge_lines_or_escape_sequences() {
        let out = Buffer::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(Escaped)
            .with_writer(move || sink.clone())
            .finish();
        let name = "\u{1b}[2Jevil\r\nFAKE LINE\u{202e}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(comm = name, path = %name, "found {name}");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        // (tracing-subscriber writes ESC in a message as `\x1b` itself.)
        assert!(
            text.contains(r"[2Jevil\u{d}\u{a}FAKE LINE\u{202e} comm="),
            "{text}"
        );
        assert!(!text.contains('\u{202e}'), "{text}");
    }
}
