//! Line and token splitting shared by the ietd.conf and allow-file readers, with C's
//! `isspace` as the separator set (what IET's `fgets`/`isspace` loops used).

/// C `isspace` in the C locale.
pub(crate) fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// IET read lines into a 4096-byte buffer: anything longer was split (ietd.conf) or
/// ignored (allow files). We accept such lines whole and warn.
pub(crate) const IET_MAX_LINE: usize = 4095;

/// One physical line.
pub(crate) struct Line<'a> {
    /// 1-based.
    pub number: usize,
    pub text: &'a str,
    /// False only for a last line without `\n`.
    pub terminated: bool,
}

pub(crate) fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    let ends_with_newline = text.ends_with('\n');
    let mut pieces: Vec<&str> = text.split('\n').collect();
    if ends_with_newline || text.is_empty() {
        // split leaves an empty piece after the final newline.
        pieces.pop();
    }
    let count = pieces.len();
    pieces.into_iter().enumerate().map(move |(i, text)| Line {
        number: i + 1,
        text,
        terminated: i + 1 < count || ends_with_newline,
    })
}

/// A token and its byte range in the line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Token<'a> {
    pub text: &'a str,
    pub end: usize,
}

pub(crate) fn tokens(line: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (is_c_space(c), start) {
            (true, Some(s)) => {
                out.push(Token {
                    text: &line[s..i],
                    end: i,
                });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Token {
            text: &line[s..],
            end: line.len(),
        });
    }
    out
}

/// Trims C whitespace at both ends.
pub(crate) fn trim_c(s: &str) -> &str {
    s.trim_matches(is_c_space)
}

/// Cuts `s` at the first `#` that starts a word (preceded by whitespace or at the
/// start). A `#` inside a word (`Path=/srv/disk#1`) is kept.
pub(crate) fn strip_inline_comment(s: &str) -> (&str, bool) {
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        if c == '#' && prev_space {
            return (&s[..i], true);
        }
        prev_space = is_c_space(c);
    }
    (s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_splitting() {
        let v: Vec<_> = lines("a\nb\n")
            .map(|l| (l.number, l.text, l.terminated))
            .collect();
        assert_eq!(v, vec![(1, "a", true), (2, "b", true)]);
        let v: Vec<_> = lines("a\nb")
            .map(|l| (l.number, l.text, l.terminated))
            .collect();
        assert_eq!(v, vec![(1, "a", true), (2, "b", false)]);
        assert_eq!(lines("").count(), 0);
        assert_eq!(lines("\n").count(), 1);
    }

    #[test]
    fn token_splitting() {
        let t: Vec<_> = tokens("  Lun 0\tPath=/a b \r")
            .iter()
            .map(|t| t.text)
            .collect();
        assert_eq!(t, vec!["Lun", "0", "Path=/a", "b"]);
        let line = "Lun 12 rest";
        let toks = tokens(line);
        assert_eq!(&line[toks[1].end..], " rest");
    }
}
