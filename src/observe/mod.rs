//! What a job leaves behind for monitoring and for people, read from its journal: the
//! Prometheus metrics file `run --metrics-file` writes at the end of every run (`metrics`),
//! and the self-contained HTML page of `report --format html` (`html`, with the figures it
//! shows gathered in `facts` and its inline SVG charts drawn by `chart`).

pub(crate) mod html;
pub(crate) mod metrics;

mod chart;
mod facts;

/// `s` safe in HTML text and attribute values: `&`, `<`, `>`, `"` and `'` escaped. Every
/// value from a journal (ids, messages, paths, names) goes through it.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            super::esc(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(super::esc("plain text é"), "plain text é");
    }
}
