//! What the `wasmkv` commands do, behind `main.rs`'s argument parsing: `remote` talks to a
//! running node through `wasmkv::client`; `offline` reads (and on request repairs) a data
//! directory's WAL with no node running; `bench` loads a node over bare connections of its
//! own; `plugin` lists a node's plugins and checks a plugin file offline. Shared here: how
//! errors and bytes are printed.

pub mod bench;
pub mod offline;
pub mod plugin;
pub mod remote;
pub mod token;

/// An error and its causes on one line, joined by ": ". A cause whose text is already part
/// of the line is skipped: many errors (ours and the standard library's) repeat their source
/// in their own message, and printing it twice only makes the line harder to read.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Bytes as text a terminal shows safely and a reader can map back: printable ASCII as is
/// (`"` and `\` backslash-escaped), every other byte as `\xNN`.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_keeps_printable_ascii_and_hexes_the_rest() {
        assert_eq!(escape(b"user:42"), "user:42");
        assert_eq!(escape(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(escape(b"\x00\xff\n\x7f"), "\\x00\\xff\\x0a\\x7f");
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
    }

    #[test]
    fn error_line_joins_causes_without_repeats() {
        let io = std::io::Error::other("disk on fire");
        let err = anyhow::Error::new(io)
            .context("writing x: disk on fire")
            .context("saving");
        assert_eq!(error_line(&err), "saving: writing x: disk on fire");
        let err = anyhow::anyhow!("two\nlines").context("outer");
        assert_eq!(error_line(&err), "outer: two lines");
    }
}
