//! A linear pre-scan of YAML (and JSON) text for its nesting depth, run before the parser.
//!
//! libyaml, under serde_yaml_ng, takes time quadratic in the nesting depth (every token checks
//! the simple keys of every open flow level), so 300 KB of `[` keeps a load busy for minutes,
//! and deep input recurses deeply. This scan counts the collections the parser would open —
//! block mappings and sequences by their columns, flow collections by their brackets — while
//! skipping what is text to the parser: quoted scalars, block scalars (`|`, `>`), plain scalars
//! (`key: a[0]`) and comments. It follows libyaml's own tokenizing rules for where each of those
//! starts and ends (token boundaries, the block indentation a continuation line must exceed).
//!
//! Invariant: one pass, O(1) amortized work per byte, and for text the parser accepts the depth
//! found is never smaller than the depth of the value the parser builds (it may be larger for
//! odd layouts, never for what serializers write).

/// Where a text first went deeper than the limit: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Returns the nesting depth of `text` (0 for a scalar, 1 for a flat map, ...), or where it first
/// went deeper than `limit`, without looking further.
pub fn check_nesting(text: &str, limit: usize) -> Result<usize, TooDeep> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut scan = Scan {
        limit,
        max: 0,
        stack: Vec::new(),
        flow: Vec::new(),
        pairs: 0,
        flow_col: 0,
        in_plain: false,
        quote: None,
        mode: Mode::Normal,
    };
    for (i, line) in lines(text).enumerate() {
        scan.line(line.as_bytes()).map_err(|pos| TooDeep { line: i + 1, column: column(line, pos) })?;
    }
    Ok(scan.max)
}

/// The lines of a text, split at every YAML line break: `\n`, `\r\n`, a lone `\r`, and the
/// Unicode breaks libyaml also honours (NEL, LS, PS).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut i = start;
        while i < bytes.len() {
            let len = match bytes[i] {
                b'\n' => 1,
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => 2,
                b'\r' => 1,
                0xc2 if bytes.get(i + 1) == Some(&0x85) => 2,
                0xe2 if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xa8 | 0xa9)) => 3,
                _ => 0,
            };
            if len > 0 {
                let line = &text[start..i];
                start = i + len;
                return Some(line);
            }
            i += 1;
        }
        done = true;
        Some(&text[start..])
    })
}

/// The 1-based character column of byte offset `pos` of `line`.
fn column(line: &str, pos: usize) -> usize {
    let mut end = pos.min(line.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].chars().count() + 1
}

/// An open flow collection.
#[derive(Debug, Clone, Copy)]
struct Flow {
    seq: bool,
    /// A sequence whose current entry turned out to be a `key: value` pair.
    pair: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Seq,
}

/// How the next line is read, when no flow collection or quoted scalar is open.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Normal,
    /// Inside a block scalar whose parent block collection sits at column `owner` (-1: none).
    /// `indent` is the content's indentation, once known; `leading` the deepest indentation of
    /// the empty lines before it.
    BlockScalar {
        owner: isize,
        indent: Option<usize>,
        leading: usize,
    },
    /// After a plain scalar that ended with its line: more-indented lines continue it.
    PlainContinued {
        owner: isize,
    },
}

struct Scan {
    limit: usize,
    max: usize,
    /// Open block collections: (column, kind).
    stack: Vec<(usize, Kind)>,
    /// Open flow collections, innermost last.
    flow: Vec<Flow>,
    /// How many of them are sequences whose current entry is a `key: value` pair (`[a: b]` is a
    /// sequence of one map): each is one more level.
    pairs: usize,
    /// The column of the outermost open flow collection (a flow key's column).
    flow_col: usize,
    /// Inside a plain scalar of a flow collection (no token boundary since its first character).
    in_plain: bool,
    /// The open quoted scalar's quote character, and the column it started at.
    quote: Option<(u8, usize)>,
    mode: Mode,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether position `pos` of `line` is a blank or the end of the line.
fn blank_or_end(line: &[u8], pos: usize) -> bool {
    line.get(pos).is_none_or(|&b| is_blank(b))
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

impl Scan {
    /// The column of the innermost open block collection, -1 at the top level.
    fn owner(&self) -> isize {
        self.stack.last().map_or(-1, |&(c, _)| c as isize)
    }

    /// Records the current depth. `Err(pos)` once it is beyond the limit.
    fn reached(&mut self, pos: usize) -> Result<(), usize> {
        let depth = self.stack.len() + self.flow.len() + self.pairs;
        self.max = self.max.max(depth);
        if depth > self.limit {
            return Err(pos);
        }
        Ok(())
    }

    fn push(&mut self, col: usize, kind: Kind) -> Result<(), usize> {
        self.stack.push((col, kind));
        self.reached(col)
    }

    /// A mapping key at `col`: continues the mapping there, or opens one. A sequence at the same
    /// column (`key:\n- a\nnext: b`) ends with it.
    fn key_at(&mut self, col: usize) -> Result<(), usize> {
        if self.stack.last() == Some(&(col, Kind::Seq)) {
            self.stack.pop();
        }
        if self.stack.last() == Some(&(col, Kind::Map)) {
            return Ok(());
        }
        self.push(col, Kind::Map)
    }

    /// A sequence entry `- ` at `col`.
    fn entry_at(&mut self, col: usize) -> Result<(), usize> {
        if self.stack.last() == Some(&(col, Kind::Seq)) {
            return Ok(());
        }
        self.push(col, Kind::Seq)
    }

    fn line(&mut self, line: &[u8]) -> Result<(), usize> {
        // An open flow collection (with perhaps a quoted scalar in it) or quoted scalar goes on,
        // whatever the indentation.
        if !self.flow.is_empty() {
            return match self.flow_scan(line, 0)? {
                Some(end) => self.tokens(line, end, Some(self.flow_col)),
                None => Ok(()),
            };
        }
        if let Some((q, col)) = self.quote {
            return match self.quoted(line, 0, q) {
                Some(end) => self.tokens(line, end, Some(col)),
                None => Ok(()),
            };
        }
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let blank = line[indent..].iter().all(|&b| is_blank(b));
        match self.mode {
            Mode::BlockScalar { owner, indent: content, leading } => {
                if blank {
                    if content.is_none() {
                        self.mode = Mode::BlockScalar { owner, indent: None, leading: leading.max(indent) };
                    }
                    return Ok(());
                }
                // libyaml: without an indicator, the content's indentation is the deepest of its
                // leading lines, and at least one past its parent's and at least 1.
                let content = content.unwrap_or(indent.max(leading));
                if indent >= content && content as isize > owner && content >= 1 {
                    self.mode = Mode::BlockScalar { owner, indent: Some(content), leading };
                    return Ok(());
                }
                self.mode = Mode::Normal;
            }
            Mode::PlainContinued { owner } => {
                if blank {
                    return Ok(());
                }
                let rest = &line[indent..];
                if indent as isize > owner && rest[0] != b'#' && !is_document_marker(line) {
                    match plain_end(line, indent) {
                        // The scalar goes on with the next line.
                        PlainEnd::Line => return Ok(()),
                        // A comment ends it.
                        PlainEnd::Comment => {
                            self.mode = Mode::Normal;
                            return Ok(());
                        }
                        // `: ` is an error to the parser; read the line as YAML (counts more).
                        PlainEnd::Colon(_) => {}
                    }
                }
                self.mode = Mode::Normal;
            }
            Mode::Normal => {}
        }
        if blank {
            return Ok(());
        }
        if line[0] == b'%' {
            // A directive (`%YAML 1.2`).
            return Ok(());
        }
        let mut pos = indent;
        if is_document_marker(line) {
            self.stack.clear();
            if line[0] == b'.' {
                return Ok(());
            }
            pos = 3;
        } else {
            while self.stack.last().is_some_and(|&(c, _)| c > indent) {
                self.stack.pop();
            }
        }
        self.tokens(line, pos, None)
    }

    /// Reads block-context tokens from `pos`, a token boundary. `after` is the column of a node
    /// (quoted scalar, flow collection) that ended just before `pos`: a `:` makes it a key.
    /// Anything but a `:` or comment after a node is read as tokens too: the parser refuses it,
    /// and reading it can only count more. A loop, not recursion: a line may hold many nodes.
    fn tokens(&mut self, line: &[u8], mut pos: usize, mut after: Option<usize>) -> Result<(), usize> {
        // Where the properties (anchor, tag) of the node at `pos` began: a key's column.
        let mut props: Option<usize> = None;
        loop {
            while pos < line.len() && is_blank(line[pos]) {
                pos += 1;
            }
            let Some(&b) = line.get(pos) else { return Ok(()) };
            if let Some(col) = after.take() {
                if b == b':' && blank_or_end(line, pos + 1) {
                    self.key_at(col)?;
                    pos += 1;
                    continue;
                }
            }
            let start = props.unwrap_or(pos);
            match b {
                b'#' => return Ok(()),
                b'-' if blank_or_end(line, pos + 1) => {
                    self.entry_at(pos)?;
                    pos += 1;
                    props = None;
                }
                b'?' | b':' if blank_or_end(line, pos + 1) => {
                    self.key_at(start)?;
                    pos += 1;
                    props = None;
                }
                b'[' | b'{' => {
                    self.flow.push(Flow { seq: b == b'[', pair: false });
                    self.flow_col = start;
                    self.in_plain = false;
                    self.reached(pos)?;
                    match self.flow_scan(line, pos + 1)? {
                        Some(end) => pos = end,
                        None => return Ok(()),
                    }
                    after = Some(start);
                    props = None;
                }
                b'"' | b'\'' => {
                    self.quote = Some((b, start));
                    match self.quoted(line, pos + 1, b) {
                        Some(end) => pos = end,
                        None => return Ok(()),
                    }
                    after = Some(start);
                    props = None;
                }
                b'|' | b'>' => {
                    // The header: chomping and an optional indentation digit, then a comment.
                    let digit = line[pos + 1..]
                        .iter()
                        .take_while(|&&c| !is_blank(c))
                        .find(|c| c.is_ascii_digit())
                        .map(|c| usize::from(c - b'0'));
                    let owner = self.owner();
                    let indent = digit.map(|d| if owner >= 0 { owner as usize + d } else { d });
                    self.mode = Mode::BlockScalar { owner, indent, leading: 0 };
                    return Ok(());
                }
                b'&' | b'!' => {
                    props.get_or_insert(pos);
                    pos = property_end(line, pos, false);
                }
                b'*' => {
                    pos = property_end(line, pos, false);
                    after = Some(start);
                    props = None;
                }
                _ => match plain_end(line, pos) {
                    PlainEnd::Colon(colon) => {
                        self.key_at(start)?;
                        pos = colon + 1;
                        props = None;
                    }
                    PlainEnd::Comment => return Ok(()),
                    PlainEnd::Line => {
                        self.mode = Mode::PlainContinued { owner: self.owner() };
                        return Ok(());
                    }
                },
            }
        }
    }

    /// Reads the rest of a quoted scalar from `pos`. Returns the position after the closing
    /// quote, or `None` when it goes on with the next line.
    fn quoted(&mut self, line: &[u8], mut pos: usize, q: u8) -> Option<usize> {
        while pos < line.len() {
            let b = line[pos];
            if q == b'"' && b == b'\\' {
                pos += 2;
            } else if b == q {
                if q == b'\'' && line.get(pos + 1) == Some(&b'\'') {
                    pos += 2;
                } else {
                    self.quote = None;
                    return Some(pos + 1);
                }
            } else {
                pos += 1;
            }
        }
        None
    }

    /// Reads flow-context tokens from `pos`. Returns the position after the bracket that closed
    /// the outermost collection, or `None` when the collection goes on with the next line (or a
    /// quoted scalar inside it does).
    fn flow_scan(&mut self, line: &[u8], mut pos: usize) -> Result<Option<usize>, usize> {
        if let Some((q, _)) = self.quote {
            match self.quoted(line, pos, q) {
                Some(end) => pos = end,
                None => return Ok(None),
            }
        }
        while pos < line.len() {
            let b = line[pos];
            let after_blank = pos == 0 || is_blank(line[pos - 1]);
            match b {
                _ if is_blank(b) => {}
                // A comment: at a token boundary, or after a blank inside a plain scalar.
                b'#' if !self.in_plain || after_blank => return Ok(None),
                b'[' | b'{' => {
                    self.flow.push(Flow { seq: b == b'[', pair: false });
                    self.in_plain = false;
                    self.reached(pos)?;
                }
                b']' | b'}' => {
                    self.in_plain = false;
                    if self.flow.pop().is_some_and(|f| f.pair) {
                        self.pairs -= 1;
                    }
                    if self.flow.is_empty() {
                        return Ok(Some(pos + 1));
                    }
                }
                b',' => {
                    self.in_plain = false;
                    if let Some(f) = self.flow.last_mut().filter(|f| f.pair) {
                        f.pair = false;
                        self.pairs -= 1;
                    }
                }
                // A key or value indicator: at a token boundary (`"a":1`, `[]: x`, `?a`), or a `:`
                // before a blank or flow indicator; else part of a plain scalar (`a:b`, `a?`).
                b'?' | b':'
                    if !self.in_plain
                        || (b == b':'
                            && line.get(pos + 1).is_none_or(|&c| is_blank(c) || is_flow_indicator(c) || c == b'?')) =>
                {
                    self.in_plain = false;
                    if let Some(f) = self.flow.last_mut().filter(|f| f.seq && !f.pair) {
                        f.pair = true;
                        self.pairs += 1;
                        self.reached(pos)?;
                    }
                }
                b'"' | b'\'' if !self.in_plain => {
                    self.quote = Some((b, pos));
                    match self.quoted(line, pos + 1, b) {
                        Some(end) => {
                            pos = end;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                b'&' | b'!' | b'*' if !self.in_plain => {
                    pos = property_end(line, pos, true);
                    continue;
                }
                _ => self.in_plain = true,
            }
            pos += 1;
        }
        Ok(None)
    }
}

/// The end of the anchor (`&a`), alias (`*a`) or tag (`!t`) at `pos`. As libyaml reads them: an
/// anchor or alias name is letters, digits, `-` and `_`; a tag goes on to a blank (in a flow
/// collection, or a flow indicator: the parser refuses one there).
fn property_end(line: &[u8], pos: usize, flow: bool) -> usize {
    let rest = &line[pos + 1..];
    let len = if line[pos] == b'!' {
        rest.iter().take_while(|&&c| !is_blank(c) && (!flow || !is_flow_indicator(c))).count()
    } else {
        rest.iter().take_while(|&&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_').count()
    };
    pos + 1 + len
}

/// Whether a line is `---` or `...` (followed by a blank or nothing).
fn is_document_marker(line: &[u8]) -> bool {
    (line.starts_with(b"---") || line.starts_with(b"...")) && blank_or_end(line, 3)
}

/// How a block-context plain scalar starting at some position ends on its line.
enum PlainEnd {
    /// At `:` followed by a blank (the scalar was a key); the position of the `:`.
    Colon(usize),
    /// At a comment.
    Comment,
    /// With the line.
    Line,
}

fn plain_end(line: &[u8], start: usize) -> PlainEnd {
    for pos in start..line.len() {
        match line[pos] {
            b':' if blank_or_end(line, pos + 1) => return PlainEnd::Colon(pos),
            b'#' if pos > start && is_blank(line[pos - 1]) => return PlainEnd::Comment,
            _ => {}
        }
    }
    PlainEnd::Line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn depth(text: &str) -> usize {
        check_nesting(text, usize::MAX).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The depth of a parsed value, as the scan counts it.
    fn value_depth(v: &Value) -> usize {
        match v {
            Value::Array(a) => 1 + a.iter().map(value_depth).max().unwrap_or(0),
            Value::Object(m) => 1 + m.values().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    const DEPLOYMENT: &str = r#"# A deployment [with brackets] in a comment {
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # trailing [comment
  labels: {app: web, tier: "front[end]"}
  annotations:
    note: 'it''s [not] a list'
    url: http://example.com/a[0]?b={c}
spec:
  replicas: 3
  template:
    spec:
      containers:
      - name: web
        image: nginx:1.25
        args: ["--flag=[x]", '--other={y}']
        command:
          - sh
          - -c
          - |
            echo "[[[[[[[[ {{{{{{"
            for i in 1 2; do echo [$i]; done
        env:
        - name: A
          value: >-
            folded [ text
            more { text
        - {name: B, value: "x"}
      volumes: []
"#;

    #[test]
    fn ordinary_objects_count_their_collections() {
        let parsed: Value = serde_yaml_ng::from_str(DEPLOYMENT).unwrap();
        assert_eq!(depth(DEPLOYMENT), value_depth(&parsed));
        assert_eq!(depth(DEPLOYMENT), 8, "the maps of spec.template.spec.containers[0].env[0]");
        let json = serde_json::to_string_pretty(&parsed).unwrap();
        assert_eq!(depth(&json), 8);
        assert_eq!(depth(&serde_json::to_string(&parsed).unwrap()), 8);
    }

    #[test]
    fn scalars_and_flat_maps() {
        assert_eq!(depth(""), 0);
        assert_eq!(depth("just text [with] brackets\n"), 0);
        assert_eq!(depth("a: 1\nb: two\n"), 1);
        assert_eq!(depth("a:\n  b:\n    c: [1, {d: e}]\n"), 5);
        assert_eq!(depth("--- [a]\n"), 1);
        assert_eq!(depth("---\n- - - a\n  - b\n- c\n"), 3);
        assert_eq!(depth("key:\n- a\n- b\nnext: c\n"), 2, "a sequence indented like its key");
    }

    #[test]
    fn text_is_not_counted() {
        // Block scalars, whatever their brackets and indentation indicators.
        assert_eq!(depth("a: |\n  [[[[\n   {{{{\n\n  ]]\nb: 1\n"), 1);
        assert_eq!(depth("a: >2-\n   [[[[\nb: [x]\n"), 2);
        assert_eq!(depth("- |\n [[[[\n- x\n"), 1);
        // Quoted scalars, over several lines too, with their escapes.
        assert_eq!(depth("a: \"[[[\\\" [[[\n  [[[\"\nb: '[[ '' [['\n"), 1);
        assert_eq!(depth("[\"a]]]\", 'b]]]''', c]\n"), 1);
        // Plain scalars: brackets inside them are text, over continuation lines too.
        assert_eq!(depth("a: b[0] {c}\n  [[[[ continued\nd: e\n"), 1);
        assert_eq!(depth("- x\n  [[[[\n"), 1);
        // Comments, in block and flow context.
        assert_eq!(depth("# [[[[\na: 1 # [[[[\nb: [x, # [[[[\n  y]\n"), 2);
        assert_eq!(depth("a: [x#y, z]\n"), 2, "a # inside a plain scalar is text");
        // Anchors and tags before nodes.
        assert_eq!(depth("a: &x [b]\nc: !!seq [d]\ne: *x\n"), 2);
        assert_eq!(depth("&a:\n  a"), 1, "an anchor's name ends before the ':'");
    }

    #[test]
    fn json_strings_and_keys() {
        assert_eq!(depth(r#"{"a":"[[[","b":["]]]",{"c":"{"}]}"#), 3);
        assert_eq!(depth("{a:\"b\"[}"), 2, "a:\"b\" is one plain scalar; the [ after it counts");
        assert_eq!(depth("[a: [b: c], d, ? e]"), 4, "pairs in flow sequences are maps");
        assert_eq!(depth("{a: [b, c], d: e}"), 2);
        assert_eq!(depth("[?a]"), 2, "? is a key indicator in flow context, with or without a blank");
        assert_eq!(depth("[\n  {\n    \"k\": [\n      1\n    ]\n  }\n]\n"), 3);
    }

    #[test]
    fn too_deep_points_at_the_crossing() {
        let deep = "[".repeat(150_000);
        assert_eq!(check_nesting(&deep, 200), Err(TooDeep { line: 1, column: 201 }));
        let text = format!("apiVersion: v1\nkind: A\nspec:\n  x: {}\n", "[".repeat(300));
        assert_eq!(check_nesting(&text, 200), Err(TooDeep { line: 4, column: 6 + 198 }));
        let mut block = String::new();
        for i in 0..300 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        assert_eq!(check_nesting(&block, 200), Err(TooDeep { line: 201, column: 201 }));
        let dashes = format!("{}x\n", "- ".repeat(250));
        assert_eq!(check_nesting(&dashes, 200), Err(TooDeep { line: 1, column: 401 }));
        assert_eq!(check_nesting(&"[".repeat(200), 200), Ok(200));
    }

    #[test]
    fn every_line_break_counts() {
        assert_eq!(check_nesting("a: 1\r\nb:\r  [[[", 2), Err(TooDeep { line: 3, column: 4 }));
        assert_eq!(depth("- ---\r- - a"), 2);
        assert_eq!(check_nesting("a: 1\u{2028}b: [[[", 2), Err(TooDeep { line: 2, column: 5 }));
        assert_eq!(lines("a\r\nb\rc\nd\u{85}e\u{2029}").collect::<Vec<_>>(), ["a", "b", "c", "d", "e", ""]);
    }

    #[test]
    fn columns_are_characters() {
        let text = format!("\"ключ\": {}", "[".repeat(10));
        assert_eq!(check_nesting(&text, 5), Err(TooDeep { line: 1, column: 13 }));
    }

    #[test]
    fn large_inputs_take_one_pass() {
        // Wide: many siblings and long lines.
        let wide: String = (0..100_000).map(|i| format!("k{i}: [{i}, {{a: b}}]\n")).collect();
        assert_eq!(depth(&wide), 3);
        // Deep then shallow, many times: the block stack grows and shrinks.
        let mut saw = String::new();
        for _ in 0..1000 {
            for i in 0..100 {
                saw.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
            }
        }
        assert_eq!(depth(&saw), 100);
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        // No numbers: with serde_json's arbitrary precision (a feature some dependency turns on)
        // serde_yaml_ng writes a number as a map.
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[ -~]{0,12}".prop_map(Value::String),
            "[\\[\\]{}#:'\" a-z\n|>-]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\[{#: ]{1,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// What serializers write is counted exactly: YAML (block style, quoted and block
        /// scalars) and JSON, compact and pretty.
        #[test]
        fn serialized_values_count_exactly(v in arb_value()) {
            let want = value_depth(&v);
            let yaml = serde_yaml_ng::to_string(&v).unwrap();
            prop_assert_eq!(depth(&yaml), want, "{}", yaml);
            prop_assert_eq!(depth(&serde_json::to_string(&v).unwrap()), want);
            prop_assert_eq!(depth(&serde_json::to_string_pretty(&v).unwrap()), want);
        }

        /// Random text from YAML's indicator characters: whatever the parser accepts, the scan
        /// counts at least as deep.
        #[test]
        fn accepted_text_is_never_deeper_than_counted(text in "([\\[\\]{}'\"#:,?&!*|>\\\\ -]|a|b|2|\n|  |- |: |---|\t|\r){0,60}") {
            if let Ok(v) = serde_yaml_ng::from_str::<Value>(&text) {
                prop_assert!(depth(&text) >= value_depth(&v), "{:?} parsed as {}", text, v);
            }
        }
    }
}
