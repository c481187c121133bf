//! A JSON reader for `cargo xtask dashboards` (xtask has no JSON dependency): RFC 8259 values,
//! objects keeping their key order.

/// A JSON value (xtask has no JSON dependency; the dashboards need nothing more).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

pub(super) trait Items<'a> {
    fn items(self) -> std::slice::Iter<'a, Json>;
}

impl<'a> Items<'a> for Option<&'a Json> {
    /// The elements of an array (none for anything else).
    fn items(self) -> std::slice::Iter<'a, Json> {
        match self {
            Some(Json::Arr(a)) => a.iter(),
            _ => [].iter(),
        }
    }
}

impl Json {
    pub(super) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |j, k| j.get(k))
    }

    pub(super) fn str_at(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Json::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub(super) fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            c: text.chars().collect(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i < p.c.len() {
            return Err(format!("trailing characters at character {}", p.i));
        }
        Ok(v)
    }
}

struct Parser {
    c: Vec<char>,
    i: usize,
}

impl Parser {
    fn ws(&mut self) {
        while self.c.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        let ok = self
            .c
            .get(self.i..self.i + n)
            .is_some_and(|w| w.iter().copied().eq(s.chars()));
        self.i += if ok { n } else { 0 };
        ok
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        let err = |p: &Parser| format!("unexpected {:?} at character {}", p.c.get(p.i), p.i);
        match self.c.get(self.i).copied() {
            Some('{') => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.eat("}") {
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value()? else {
                        return Err(err(self));
                    };
                    self.ws();
                    if !self.eat(":") {
                        return Err(err(self));
                    }
                    fields.push((k, self.value()?));
                    self.ws();
                    if self.eat("}") {
                        return Ok(Json::Obj(fields));
                    }
                    if !self.eat(",") {
                        return Err(err(self));
                    }
                }
            }
            Some('[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]") {
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    if self.eat("]") {
                        return Ok(Json::Arr(items));
                    }
                    if !self.eat(",") {
                        return Err(err(self));
                    }
                }
            }
            Some('"') => self.string().map(Json::Str).ok_or_else(|| err(self)),
            Some('t') if self.eat("true") => Ok(Json::Bool(true)),
            Some('f') if self.eat("false") => Ok(Json::Bool(false)),
            Some('n') if self.eat("null") => Ok(Json::Null),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .c
                    .get(self.i)
                    .is_some_and(|c| "+-.eE".contains(*c) || c.is_ascii_digit())
                {
                    self.i += 1;
                }
                let s: String = self.c[start..self.i].iter().collect();
                s.parse().map(Json::Num).map_err(|_| err(self))
            }
            _ => Err(err(self)),
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h: String = self.c.get(self.i..self.i + 4)?.iter().collect();
        self.i += 4;
        u32::from_str_radix(&h, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut s = String::new();
        loop {
            let c = *self.c.get(self.i)?;
            self.i += 1;
            match c {
                '"' => return Some(s),
                '\\' => {
                    let e = *self.c.get(self.i)?;
                    self.i += 1;
                    match e {
                        'n' => s.push('\n'),
                        't' => s.push('\t'),
                        'r' => s.push('\r'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'u' => {
                            let mut u = self.hex4()?;
                            if (0xd800..0xdc00).contains(&u) && self.eat("\\u") {
                                u = 0x10000
                                    + ((u - 0xd800) << 10)
                                    + self.hex4()?.checked_sub(0xdc00)?;
                            }
                            s.push(char::from_u32(u).unwrap_or('\u{fffd}'));
                        }
                        other => s.push(other),
                    }
                }
                c => s.push(c),
            }
        }
    }
}
