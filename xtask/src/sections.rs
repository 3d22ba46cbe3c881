//! Generated sections of hand-written Markdown files: the text between a pair of HTML comment
//! markers belongs to a task, which rewrites it and leaves the rest of the file alone.

/// `text` with what lies between `begin` and `end` replaced by `body`; None if a marker is
/// missing.
pub fn replace(text: &str, begin: &str, end: &str, body: &str) -> Option<String> {
    let start = text.find(begin)? + begin.len();
    let stop = text[start..].find(end)? + start;
    Some(format!(
        "{}\n{}\n{}",
        &text[..start],
        body.trim_end(),
        &text[stop..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_between_the_markers() {
        let text =
            "# T\n<!-- a:begin -->\nold\n<!-- a:end -->\nkept\n<!-- b:begin -->x<!-- b:end -->\n";
        let new = replace(text, "<!-- a:begin -->", "<!-- a:end -->", "new\n").unwrap();
        assert_eq!(
            new,
            "# T\n<!-- a:begin -->\nnew\n<!-- a:end -->\nkept\n<!-- b:begin -->x<!-- b:end -->\n"
        );
        assert_eq!(
            replace(&new, "<!-- a:begin -->", "<!-- a:end -->", "new"),
            Some(new.clone())
        );
        assert_eq!(
            replace("no markers", "<!-- a:begin -->", "<!-- a:end -->", "x"),
            None
        );
    }
}
