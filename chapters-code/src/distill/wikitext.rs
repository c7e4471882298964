//! Plain text from a MediaWiki XML dump — the distillation chapter's training text is
//! Wikipedia articles (a shortened dump that gensim ships in its wheel). What is kept: the
//! prose of every article that is not a redirect, its headings and list items. What goes:
//! templates `{{…}}`, tables `{|…|}`, references, HTML tags and comments, files and
//! categories; links keep the words they show.

// ANCHOR: plain_text
/// The articles of a dump as plain text, separated by blank lines.
pub fn plain_text(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(open) = rest.find("<text") {
        let Some(body_at) = rest[open..].find('>') else {
            break;
        };
        let body = &rest[open + body_at + 1..];
        let end = body.find("</text>").unwrap_or(body.len());
        let raw = unescape(&body[..end]);
        rest = &body[end..];
        if raw
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("#REDIRECT")
        {
            continue;
        }
        let text = article(&raw);
        if !text.is_empty() {
            out.push_str(&text);
            out.push_str("\n\n");
        }
    }
    out
}
// ANCHOR_END: plain_text

/// XML's escapes (the dump escapes the wikitext once).
fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// One article's wikitext to prose.
fn article(raw: &str) -> String {
    let s = drop_between(raw, "<!--", "-->");
    let s = drop_refs(&s);
    let s = drop_nested(&s, "{{", "}}");
    let s = drop_nested(&s, "{|", "|}");
    let s = links(&s);
    let s = drop_tags(&s);
    let s = external_links(&s);
    let s = s.replace("'''", "").replace("''", "");
    let mut lines: Vec<String> = Vec::new();
    for line in s.lines() {
        let line = line.trim();
        let line = line.trim_start_matches(['*', '#', ':', ';']).trim();
        let line = match line.strip_prefix('=') {
            Some(_) => line.trim_matches('=').trim(),
            None => line,
        };
        if line.is_empty() {
            if lines.last().is_some_and(|l| !l.is_empty()) {
                lines.push(String::new());
            }
            continue;
        }
        let collapsed = line.split_whitespace().collect::<Vec<_>>().join(" ");
        lines.push(collapsed);
    }
    lines.join("\n").trim().to_string()
}

/// `s` without every span from `open` to the next `close` (both included).
fn drop_between(s: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        out.push_str(&rest[..i]);
        match rest[i + open.len()..].find(close) {
            Some(j) => rest = &rest[i + open.len() + j + close.len()..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// References: `<ref …/>` and `<ref …>…</ref>`.
fn drop_refs(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<ref") {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let Some(gt) = tail.find('>') else {
            rest = "";
            break;
        };
        if tail[..gt].ends_with('/') {
            rest = &tail[gt + 1..];
        } else {
            rest = match tail.find("</ref>") {
                Some(j) => &tail[j + "</ref>".len()..],
                None => &tail[gt + 1..],
            };
        }
    }
    out.push_str(rest);
    out
}

/// `s` without balanced `open … close` spans, nested ones included.
fn drop_nested(s: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < s.len() {
        let tail = &s[i..];
        if tail.starts_with(open) {
            depth += 1;
            i += open.len();
        } else if depth > 0 && tail.starts_with(close) {
            depth -= 1;
            i += close.len();
        } else {
            let c = tail.chars().next().unwrap_or(' ');
            if depth == 0 {
                out.push(c);
            }
            i += c.len_utf8();
        }
    }
    out
}

/// Internal links: `[[target|shown]]` → shown, `[[target]]` → target; files, images,
/// categories and other namespaces (their target has a `:`) disappear with their captions.
fn links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("[[") {
        out.push_str(&rest[..i]);
        let inner_at = i + 2;
        // The matching `]]`, counting nested `[[`.
        let (mut depth, mut j) = (1usize, inner_at);
        let bytes = rest.as_bytes();
        while j + 1 < bytes.len() && depth > 0 {
            if bytes[j] == b'[' && bytes[j + 1] == b'[' {
                depth += 1;
                j += 2;
            } else if bytes[j] == b']' && bytes[j + 1] == b']' {
                depth -= 1;
                j += 2;
            } else {
                j += 1;
            }
        }
        if depth > 0 {
            rest = "";
            break;
        }
        let inner = &rest[inner_at..j - 2];
        let target = inner.split('|').next().unwrap_or("");
        if !target.contains(':') {
            let shown = inner.rsplit('|').next().unwrap_or(inner);
            out.push_str(&links(shown));
        }
        rest = &rest[j..];
    }
    out.push_str(rest);
    out
}

/// HTML tags, keeping what they enclose.
fn drop_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        let is_tag = tail.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/');
        match (is_tag, tail.find('>')) {
            (true, Some(j)) => rest = &tail[j + 1..],
            _ => {
                out.push('<');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// External links: `[http://… label]` → label, a bare `[http://…]` disappears.
fn external_links(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("[http") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 1..];
        match tail.find(']') {
            Some(j) => {
                if let Some((_, label)) = tail[..j].split_once(' ') {
                    out.push_str(label);
                }
                rest = &tail[j + 1..];
            }
            None => {
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_stripped_and_prose_kept() {
        let xml = r#"<page><title>R</title><revision><text xml:space="preserve">#REDIRECT [[Elsewhere]]</text></revision></page>
<page><title>Anarchism</title><revision><text xml:space="preserve">{{Redirect2|A|B|{{nested|x}}}}
'''Anarchism''' is a [[political philosophy]] that advocates [[self-governance|self-governed]] societies.&lt;ref&gt;&quot;A quote.&quot; Woodcock&lt;/ref&gt; It has [[File:Flag.svg|thumb|A [[flag]] caption]] history.&lt;!-- a comment --&gt;

== History ==
* Early [http://example.org forms] of it&lt;ref name="x"/&gt;.
{| class="wikitable"
| cell || cell
|}
Ends &lt;small&gt;here&lt;/small&gt; &amp; now.[[Category:Anarchism]]</text></revision></page>"#;
        let text = plain_text(xml);
        assert_eq!(
            text,
            "Anarchism is a political philosophy that advocates self-governed societies. It has history.\n\nHistory\nEarly forms of it.\n\nEnds here & now.\n\n"
        );
    }

    #[test]
    fn unbalanced_markup_does_not_lose_the_rest_or_panic() {
        let text =
            plain_text("<text>Open {{ never closed. [[ also open</text><text>Second é.</text>");
        assert!(text.contains("Second é."), "{text:?}");
        assert_eq!(plain_text("<text"), "");
    }
}
