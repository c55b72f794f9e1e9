//! POSIX basic regular expressions as IET's `initiators.allow` used them (glibc `regcomp`
//! without `REG_EXTENDED`, anchored `^…$`, case-sensitive), compiled once and matched
//! without backtracking.
//!
//! Supported: literals, `.`, bracket expressions (ranges, `[:class:]`, `[=c=]`, `[.c.]`,
//! negation), `*`, `\{m\}`, `\{m,\}`, `\{m,n\}`, `\(…\)`, the `^`/`$` anchors and the GNU
//! extensions glibc enables in basic syntax: `\+`, `\?`, `\|`, `\w`, `\W`, `\s`, `\S`.
//! Back-references (`\1`…) and word-boundary operators (`\b`, `\<`, …) are refused with
//! [`BreError::Unsupported`]: they cannot be evaluated without backtracking and nobody
//! writes them in an IQN pattern.
//!
//! Matching keeps the set of input positions reachable after each pattern element
//! (a Thompson-style simulation), so the cost is polynomial in pattern and input length
//! for a fixed nesting of counted repeats. Nested counts multiply (`\(\(\)\{9999\}\)\{9999\}`),
//! so the work is bounded twice: patterns nest at most [`MAX_NESTING`] groups and
//! repeats deep (recursion in parsing and matching), and one match may do at most
//! [`MATCH_BUDGET`] steps ([`BreError::TooCostly`] past it).

use std::fmt;

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreError {
    /// Not a valid POSIX basic regex; glibc would refuse it too (IET then never matched
    /// the item as a regex).
    Invalid(String),
    /// Valid for glibc but not supported here.
    Unsupported(String),
    /// Matching this pattern against this text needs more than [`MATCH_BUDGET`] steps.
    TooCostly(String),
}

impl fmt::Display for BreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreError::Invalid(m) => write!(f, "invalid regular expression: {m}"),
            BreError::Unsupported(m) => write!(f, "unsupported regular expression: {m}"),
            BreError::TooCostly(m) => write!(
                f,
                "regular expression too costly to match: {m} (more than {MATCH_BUDGET} steps)"
            ),
        }
    }
}

/// glibc's RE_DUP_MAX: the largest count in `\{m,n\}`.
const DUP_MAX: u32 = 0x7fff;

/// Deepest nesting of groups and repeats accepted; an IQN pattern needs two or three.
pub const MAX_NESTING: usize = 32;

/// Steps (one node applied to one set of positions) a single match may take: a pattern
/// a person writes needs a few hundred against an IQN (measured: 230 for `\(a*\)*` on
/// 223 `a`s, 251 for `iqn\.…:01:.*`); this many take a fraction of a second even in a
/// debug build.
pub const MATCH_BUDGET: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum ClassItem {
    Char(char),
    Range(char, char),
    Named(NamedClass),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamedClass {
    Alpha,
    Digit,
    Alnum,
    Upper,
    Lower,
    Space,
    Blank,
    Punct,
    Print,
    Graph,
    Cntrl,
    Xdigit,
    /// `\w`: alphanumerics and `_`.
    Word,
}

impl NamedClass {
    fn from_name(name: &str) -> Option<NamedClass> {
        Some(match name {
            "alpha" => NamedClass::Alpha,
            "digit" => NamedClass::Digit,
            "alnum" => NamedClass::Alnum,
            "upper" => NamedClass::Upper,
            "lower" => NamedClass::Lower,
            "space" => NamedClass::Space,
            "blank" => NamedClass::Blank,
            "punct" => NamedClass::Punct,
            "print" => NamedClass::Print,
            "graph" => NamedClass::Graph,
            "cntrl" => NamedClass::Cntrl,
            "xdigit" => NamedClass::Xdigit,
            _ => return None,
        })
    }

    // The C locale's classes: IET ran ietd in the C locale.
    fn contains(self, c: char) -> bool {
        match self {
            NamedClass::Alpha => c.is_ascii_alphabetic(),
            NamedClass::Digit => c.is_ascii_digit(),
            NamedClass::Alnum => c.is_ascii_alphanumeric(),
            NamedClass::Upper => c.is_ascii_uppercase(),
            NamedClass::Lower => c.is_ascii_lowercase(),
            NamedClass::Space => matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r'),
            NamedClass::Blank => matches!(c, ' ' | '\t'),
            NamedClass::Punct => c.is_ascii_punctuation(),
            NamedClass::Print => matches!(c, ' '..='~'),
            NamedClass::Graph => c.is_ascii_graphic(),
            NamedClass::Cntrl => c.is_ascii_control(),
            NamedClass::Xdigit => c.is_ascii_hexdigit(),
            NamedClass::Word => c.is_ascii_alphanumeric() || c == '_',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct CharSet {
    negated: bool,
    items: Vec<ClassItem>,
}

impl CharSet {
    fn contains(&self, c: char) -> bool {
        let hit = self.items.iter().any(|i| match *i {
            ClassItem::Char(x) => x == c,
            ClassItem::Range(a, b) => a <= c && c <= b,
            ClassItem::Named(n) => n.contains(c),
        });
        hit != self.negated
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Char(char),
    /// `.`
    Any,
    Set(CharSet),
    Bol,
    Eol,
    Group(Vec<Vec<Node>>),
    Repeat(Box<Node>, u32, Option<u32>),
}

/// A compiled, anchored basic regular expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bre {
    alts: Vec<Vec<Node>>,
}

/// A set of input positions `0..=n`.
#[derive(Clone, PartialEq, Eq)]
struct PosSet(Vec<bool>);

impl PosSet {
    fn empty(n: usize) -> PosSet {
        PosSet(vec![false; n + 1])
    }
    fn is_empty(&self) -> bool {
        !self.0.iter().any(|&b| b)
    }
    fn union_with(&mut self, other: &PosSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= *b;
        }
    }
    /// Positions in `self` not in `other`.
    fn minus(&self, other: &PosSet) -> PosSet {
        PosSet(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| *a && !*b)
                .collect(),
        )
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, &b)| b.then_some(i))
    }
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    src: &'a str,
    /// Groups open around the current position.
    depth: usize,
}

/// How deeply groups and repeats nest in `node` (a plain atom: 0).
fn nesting(node: &Node) -> usize {
    match node {
        Node::Repeat(inner, ..) => 1 + nesting(inner),
        Node::Group(alts) => 1 + alts.iter().flatten().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek2(&self) -> Option<char> {
        self.chars.get(self.pos + 1).copied()
    }
    fn invalid(&self, what: &str) -> BreError {
        BreError::Invalid(format!("{what} in \"{}\"", self.src))
    }

    /// `node` repeated, unless that nests too deep.
    fn repeat(&self, node: Node, min: u32, max: Option<u32>) -> Result<Node, BreError> {
        if nesting(&node) >= MAX_NESTING {
            return Err(self.too_deep());
        }
        Ok(Node::Repeat(Box::new(node), min, max))
    }

    fn too_deep(&self) -> BreError {
        BreError::Unsupported(format!(
            "groups and repeats nested more than {MAX_NESTING} deep in \"{}\"",
            self.src
        ))
    }

    /// Alternatives until end of input or `\)` (not consumed).
    fn parse_alts(&mut self) -> Result<Vec<Vec<Node>>, BreError> {
        let mut alts = vec![self.parse_seq()?];
        while self.peek() == Some('\\') && self.peek2() == Some('|') {
            self.pos += 2;
            alts.push(self.parse_seq()?);
        }
        Ok(alts)
    }

    fn at_seq_end(&self) -> bool {
        matches!(
            (self.peek(), self.peek2()),
            (None, _) | (Some('\\'), Some(')' | '|'))
        )
    }

    // Long: one arm per construct of POSIX's BRE grammar, read best in one place.
    fn parse_seq(&mut self) -> Result<Vec<Node>, BreError> {
        let mut seq: Vec<Node> = Vec::new();
        // Whether a `*` / interval here would have nothing to repeat.
        let mut can_repeat = false;
        if self.peek() == Some('^') {
            self.pos += 1;
            seq.push(Node::Bol);
        }
        loop {
            if self.at_seq_end() {
                return Ok(seq);
            }
            let Some(c) = self.peek() else {
                return Ok(seq);
            };
            self.pos += 1;
            match c {
                '*' if can_repeat => {
                    let last = seq.pop().expect("can_repeat implies an atom");
                    seq.push(self.repeat(last, 0, None)?);
                }
                '*' => {
                    seq.push(Node::Char('*'));
                    can_repeat = true;
                }
                '.' => {
                    seq.push(Node::Any);
                    can_repeat = true;
                }
                '[' => {
                    seq.push(Node::Set(self.parse_bracket()?));
                    can_repeat = true;
                }
                '$' if self.at_seq_end() => {
                    seq.push(Node::Eol);
                    can_repeat = false;
                }
                '\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.invalid("trailing backslash"));
                    };
                    self.pos += 1;
                    match e {
                        '(' => {
                            if self.depth >= MAX_NESTING {
                                return Err(self.too_deep());
                            }
                            self.depth += 1;
                            let alts = self.parse_alts()?;
                            self.depth -= 1;
                            if !(self.peek() == Some('\\') && self.peek2() == Some(')')) {
                                return Err(self.invalid("unmatched \\("));
                            }
                            self.pos += 2;
                            seq.push(Node::Group(alts));
                            can_repeat = true;
                        }
                        ')' => return Err(self.invalid("unmatched \\)")),
                        '{' => {
                            if !can_repeat {
                                return Err(self.invalid("\\{ with nothing to repeat"));
                            }
                            let (min, max) = self.parse_interval()?;
                            let last = seq.pop().expect("can_repeat implies an atom");
                            seq.push(self.repeat(last, min, max)?);
                        }
                        '+' | '?' if can_repeat => {
                            let last = seq.pop().expect("can_repeat implies an atom");
                            let max = if e == '?' { Some(1) } else { None };
                            let min = if e == '?' { 0 } else { 1 };
                            seq.push(self.repeat(last, min, max)?);
                        }
                        '1'..='9' => {
                            return Err(BreError::Unsupported(format!(
                                "back-reference \\{e} in \"{}\"",
                                self.src
                            )))
                        }
                        'b' | 'B' | '<' | '>' | '`' | '\'' => {
                            return Err(BreError::Unsupported(format!(
                                "word or buffer anchor \\{e} in \"{}\"",
                                self.src
                            )))
                        }
                        'w' | 'W' | 's' | 'S' => {
                            let class = if e.eq_ignore_ascii_case(&'w') {
                                NamedClass::Word
                            } else {
                                NamedClass::Space
                            };
                            seq.push(Node::Set(CharSet {
                                negated: e.is_ascii_uppercase(),
                                items: vec![ClassItem::Named(class)],
                            }));
                            can_repeat = true;
                        }
                        other => {
                            seq.push(Node::Char(other));
                            can_repeat = true;
                        }
                    }
                }
                other => {
                    seq.push(Node::Char(other));
                    can_repeat = true;
                }
            }
        }
    }

    fn parse_number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        if start == self.pos {
            return None;
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        // Longer than u32 is certainly above DUP_MAX.
        Some(text.parse().unwrap_or(u32::MAX))
    }

    /// After `\{`: `m\}`, `m,\}` or `m,n\}`.
    fn parse_interval(&mut self) -> Result<(u32, Option<u32>), BreError> {
        let min = self
            .parse_number()
            .ok_or_else(|| self.invalid("\\{ without a count"))?;
        let max = if self.peek() == Some(',') {
            self.pos += 1;
            self.parse_number()
        } else {
            Some(min)
        };
        if !(self.peek() == Some('\\') && self.peek2() == Some('}')) {
            return Err(self.invalid("unterminated \\{"));
        }
        self.pos += 2;
        if min > DUP_MAX || max.is_some_and(|m| m > DUP_MAX) {
            return Err(self.invalid("repetition count above 32767"));
        }
        if max.is_some_and(|m| m < min) {
            return Err(self.invalid("\\{m,n\\} with n < m"));
        }
        Ok((min, max))
    }

    /// After `[`.
    fn parse_bracket(&mut self) -> Result<CharSet, BreError> {
        let mut set = CharSet {
            negated: false,
            items: Vec::new(),
        };
        if self.peek() == Some('^') {
            set.negated = true;
            self.pos += 1;
        }
        let mut first = true;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.invalid("unterminated ["));
            };
            if c == ']' && !first {
                self.pos += 1;
                return Ok(set);
            }
            first = false;
            let lo = match self.bracket_atom()? {
                BracketAtom::Char(c) => c,
                BracketAtom::Class(n) => {
                    set.items.push(ClassItem::Named(n));
                    continue;
                }
            };
            // `a-z`, but `-` before `]` is a literal.
            if self.peek() == Some('-') && self.peek2().is_some_and(|c| c != ']') {
                self.pos += 1;
                let hi = match self.bracket_atom()? {
                    BracketAtom::Char(c) => c,
                    BracketAtom::Class(_) => {
                        return Err(self.invalid("character class as a range end"))
                    }
                };
                if hi < lo {
                    return Err(self.invalid("invalid range end"));
                }
                set.items.push(ClassItem::Range(lo, hi));
            } else {
                set.items.push(ClassItem::Char(lo));
            }
        }
    }

    fn bracket_atom(&mut self) -> Result<BracketAtom, BreError> {
        let c = self.peek().ok_or_else(|| self.invalid("unterminated ["))?;
        self.pos += 1;
        if c != '[' {
            return Ok(BracketAtom::Char(c));
        }
        let kind = match self.peek() {
            Some(k @ (':' | '=' | '.')) => k,
            _ => return Ok(BracketAtom::Char('[')),
        };
        self.pos += 1;
        let start = self.pos;
        loop {
            match (self.peek(), self.peek2()) {
                (Some(k), Some(']')) if k == kind => break,
                (None, _) => return Err(self.invalid("unterminated [: [= or [.")),
                _ => self.pos += 1,
            }
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        self.pos += 2;
        match kind {
            ':' => NamedClass::from_name(&name)
                .map(BracketAtom::Class)
                .ok_or_else(|| self.invalid(&format!("unknown character class [:{name}:]"))),
            _ => {
                let mut it = name.chars();
                match (it.next(), it.next()) {
                    (Some(c), None) => Ok(BracketAtom::Char(c)),
                    _ => Err(BreError::Unsupported(format!(
                        "multi-character collating element [{kind}{name}{kind}] in \"{}\"",
                        self.src
                    ))),
                }
            }
        }
    }
}

enum BracketAtom {
    Char(char),
    Class(NamedClass),
}

/// Steps left for the current match; `None` from a step means it ran out.
struct Budget(u64);

impl Budget {
    fn take(&mut self) -> Option<()> {
        self.0 = self.0.checked_sub(1)?;
        Some(())
    }
}

fn step(node: &Node, input: &[char], starts: &PosSet, budget: &mut Budget) -> Option<PosSet> {
    budget.take()?;
    let n = input.len();
    let mut out = PosSet::empty(n);
    match node {
        Node::Char(c) => {
            for p in starts.iter().filter(|&p| p < n && input[p] == *c) {
                out.0[p + 1] = true;
            }
        }
        Node::Any => {
            for p in starts.iter().filter(|&p| p < n) {
                out.0[p + 1] = true;
            }
        }
        Node::Set(set) => {
            for p in starts.iter().filter(|&p| p < n && set.contains(input[p])) {
                out.0[p + 1] = true;
            }
        }
        Node::Bol => out.0[0] = starts.0[0],
        Node::Eol => out.0[n] = starts.0[n],
        Node::Group(alts) => {
            for seq in alts {
                out.union_with(&step_seq(seq, input, starts, budget)?);
            }
        }
        Node::Repeat(inner, min, max) => {
            let mut cur = starts.clone();
            for _ in 0..*min {
                cur = step(inner, input, &cur, budget)?;
                if cur.is_empty() {
                    return Some(cur);
                }
            }
            out = cur.clone();
            match max {
                None => {
                    // Closure: only positions new in this round can lead anywhere new.
                    let mut frontier = cur;
                    while !frontier.is_empty() {
                        let next = step(inner, input, &frontier, budget)?;
                        frontier = next.minus(&out);
                        out.union_with(&frontier);
                    }
                }
                Some(max) => {
                    for _ in *min..*max {
                        let next = step(inner, input, &cur, budget)?;
                        if next.is_empty() || next == cur {
                            break;
                        }
                        out.union_with(&next);
                        cur = next;
                    }
                }
            }
        }
    }
    Some(out)
}

fn step_seq(seq: &[Node], input: &[char], starts: &PosSet, budget: &mut Budget) -> Option<PosSet> {
    let mut cur = starts.clone();
    for node in seq {
        if cur.is_empty() {
            break;
        }
        cur = step(node, input, &cur, budget)?;
    }
    Some(cur)
}

impl Bre {
    /// Compiles `pattern` as IET did (`^pattern$`, basic syntax).
    pub fn new(pattern: &str) -> Result<Bre, BreError> {
        let mut p = Parser {
            chars: pattern.chars().collect(),
            pos: 0,
            src: pattern,
            depth: 0,
        };
        let alts = p.parse_alts()?;
        if p.pos != p.chars.len() {
            return Err(p.invalid("unmatched \\)"));
        }
        Ok(Bre { alts })
    }

    /// Whether the whole of `text` matches; [`BreError::TooCostly`] when finding out
    /// would take more than [`MATCH_BUDGET`] steps.
    pub fn try_match(&self, text: &str) -> Result<bool, BreError> {
        let input: Vec<char> = text.chars().collect();
        let mut start = PosSet::empty(input.len());
        start.0[0] = true;
        let mut budget = Budget(MATCH_BUDGET);
        for seq in &self.alts {
            match step_seq(seq, &input, &start, &mut budget) {
                Some(end) if end.0[input.len()] => return Ok(true),
                Some(_) => {}
                None => return Err(BreError::TooCostly(format!("against \"{text}\""))),
            }
        }
        Ok(false)
    }

    /// Whether the whole of `text` matches; a match too costly to decide counts as no
    /// match (access decisions use [`Bre::try_match`] and refuse then).
    pub fn is_match(&self, text: &str) -> bool {
        self.try_match(text).unwrap_or(false)
    }

    /// The single name this pattern stands for, if it is a plain name in which only `.`
    /// is special (`iqn.1993-08.org.debian:01:abc`): such a pattern is what people write
    /// to allow one initiator, and LIO can express it as a node ACL. `\.` counts as `.`.
    pub fn literal(&self) -> Option<String> {
        let [seq] = self.alts.as_slice() else {
            return None;
        };
        let mut out = String::new();
        for node in seq {
            match node {
                Node::Char(c) => out.push(*c),
                // Only a `.` produces Any, and in a name it means the dot itself.
                Node::Any => out.push('.'),
                Node::Bol | Node::Eol => {}
                _ => return None,
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Bre::new(p)
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .is_match(s)
    }

    #[test]
    fn literals_and_dot() {
        assert!(m(
            "iqn.1993-08.org.debian:01:abc",
            "iqn.1993-08.org.debian:01:abc"
        ));
        assert!(m(
            "iqn.1993-08.org.debian:01:abc",
            "iqnX1993-08.org.debian:01:abc"
        ));
        assert!(!m(
            "iqn.1993-08.org.debian:01:abc",
            "iqn.1993-08.org.debian:01:abcd"
        ));
        assert!(!m("abc", "xabc"));
        assert!(m("a\\.b", "a.b"));
        assert!(!m("a\\.b", "axb"));
        assert!(!m("ABC", "abc"));
    }

    #[test]
    fn star_and_prefix() {
        assert!(m(
            "iqn.1993-08.org.debian:.*",
            "iqn.1993-08.org.debian:01:x"
        ));
        assert!(!m("iqn.1993-08.org.debian:.*", "iqn.2001-04.com.example:x"));
        assert!(m("*a", "*a"));
        assert!(m("a**", "aaa"));
        assert!(m("\\(ab\\)*", ""));
        assert!(m("\\(ab\\)*", "ababab"));
        assert!(!m("\\(ab\\)*", "aba"));
        assert!(m("\\(a*\\)*b", "aaaab"));
    }

    #[test]
    fn brackets() {
        assert!(m("host[0-9][0-9]", "host42"));
        assert!(!m("host[0-9][0-9]", "host4x"));
        assert!(m("[^a]b", "xb"));
        assert!(!m("[^a]b", "ab"));
        assert!(m("[]a]", "]"));
        assert!(m("[a-]", "-"));
        assert!(m("[[:digit:]]\\{3\\}", "123"));
        assert!(!m("[[:digit:]]\\{3\\}", "12"));
        assert!(m("[\\]", "\\"));
        assert!(m("[[.a.]]", "a"));
    }

    #[test]
    fn intervals_and_gnu_ops() {
        assert!(m("a\\{2,3\\}", "aa"));
        assert!(m("a\\{2,3\\}", "aaa"));
        assert!(!m("a\\{2,3\\}", "aaaa"));
        assert!(m("a\\{2,\\}", "aaaaa"));
        assert!(m("ab\\+", "abbb"));
        assert!(!m("ab\\+", "a"));
        assert!(m("ab\\?", "a"));
        assert!(m("iqn.a\\|iqn.b", "iqn.b"));
        assert!(m("x\\(a\\|b\\)y", "xby"));
        assert!(m("\\w\\+", "ab_9"));
        assert!(!m("\\w\\+", "a-b"));
        assert!(m("a+", "a+"));
    }

    #[test]
    fn anchors() {
        assert!(m("^abc$", "abc"));
        assert!(m("a$b", "a$b"));
        assert!(m("a^b", "a^b"));
    }

    #[test]
    fn errors() {
        assert!(matches!(Bre::new("a\\"), Err(BreError::Invalid(_))));
        assert!(matches!(Bre::new("\\(a"), Err(BreError::Invalid(_))));
        assert!(matches!(Bre::new("a\\)"), Err(BreError::Invalid(_))));
        assert!(matches!(Bre::new("[a"), Err(BreError::Invalid(_))));
        assert!(matches!(Bre::new("\\{2\\}"), Err(BreError::Invalid(_))));
        assert!(matches!(Bre::new("a\\{3,2\\}"), Err(BreError::Invalid(_))));
        assert!(matches!(Bre::new("[[:nope:]]"), Err(BreError::Invalid(_))));
        assert!(matches!(
            Bre::new("\\(a\\)\\1"),
            Err(BreError::Unsupported(_))
        ));
        assert!(matches!(Bre::new("\\<a"), Err(BreError::Unsupported(_))));
    }

    #[test]
    fn literal_detection() {
        assert_eq!(
            Bre::new("iqn.1993-08.org.debian:01:abc")
                .expect("valid")
                .literal()
                .as_deref(),
            Some("iqn.1993-08.org.debian:01:abc")
        );
        assert_eq!(
            Bre::new("iqn\\.2001").expect("valid").literal().as_deref(),
            Some("iqn.2001")
        );
        assert_eq!(Bre::new("iqn.*").expect("valid").literal(), None);
        assert_eq!(Bre::new("a[bc]").expect("valid").literal(), None);
        assert_eq!(Bre::new("a\\|b").expect("valid").literal(), None);
    }

    #[test]
    fn nesting_is_bounded() {
        // Each of these overflowed the stack (parsing, matching or dropping).
        let deep = format!("{}a{}", "\\(".repeat(100_000), "\\)".repeat(100_000));
        assert!(matches!(Bre::new(&deep), Err(BreError::Unsupported(_))));
        let stars = format!("a{}", "*".repeat(100_000));
        assert!(matches!(Bre::new(&stars), Err(BreError::Unsupported(_))));
        let ok = format!(
            "{}a{}",
            "\\(".repeat(MAX_NESTING / 2),
            "\\)*".repeat(MAX_NESTING / 2)
        );
        assert!(Bre::new(&ok).expect("at the limit").is_match("aaa"));
        let e = Bre::new(&format!("{ok}*")).unwrap_err();
        assert!(e.to_string().contains("nested more than 32 deep"), "{e}");
    }

    #[test]
    fn multiplied_counts_hit_the_work_limit_quickly() {
        // 32767^3 empty steps: days of work without the budget.
        let p = "\\(\\(\\(\\)\\{32767\\}\\)\\{32767\\}\\)\\{32767\\}x";
        let re = Bre::new(p).expect("valid for glibc");
        let t = std::time::Instant::now();
        let e = re.try_match("x").unwrap_err();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert!(matches!(e, BreError::TooCostly(_)), "{e}");
        assert!(!re.is_match("x"), "too costly counts as no match");
        // What people write stays far inside the budget, even on a worst-case name.
        let a = "a".repeat(223);
        let re = Bre::new("\\(a*\\)*").expect("valid");
        assert_eq!(re.try_match(&a), Ok(true));
        let re = Bre::new("iqn\\.1993-08\\.org\\.debian:01:.*").expect("valid");
        assert_eq!(
            re.try_match(&format!("iqn.1993-08.org.debian:01:{a}")),
            Ok(true)
        );
    }

    /// Pattern pieces that nest and repeat, for the property test below.
    fn piece() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let atom = prop_oneof![
            Just("a".to_string()),
            Just(".".to_string()),
            Just("[a-c]".to_string()),
            Just("\\w".to_string()),
            Just(String::new()),
        ];
        atom.prop_recursive(6, 64, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
                inner.clone().prop_map(|p| format!("\\({p}\\)")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("\\({a}\\|{b}\\)")),
                inner.clone().prop_map(|p| format!("\\({p}\\)*")),
                (inner, 0u32..400, 0u32..400)
                    .prop_map(|(p, m, n)| format!("\\({p}\\)\\{{{m},{}\\}}", m.max(n))),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Whatever the pattern and an IQN-sized text, a match ends, within a time
        /// bound, with an answer or TooCostly, and the same one each time.
        #[test]
        fn every_match_is_bounded(p in piece(), text in "[a-d]{0,223}") {
            if let Ok(re) = Bre::new(&p) {
                let t = std::time::Instant::now();
                let first = re.try_match(&text);
                proptest::prop_assert!(t.elapsed() < std::time::Duration::from_secs(2),
                    "{p:?} took {:?}", t.elapsed());
                proptest::prop_assert_eq!(first, re.try_match(&text));
            }
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = "\\(\\(a*\\)*\\)*b".to_string();
        let s = "a".repeat(300);
        let t = std::time::Instant::now();
        assert!(!m(&p, &s));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
