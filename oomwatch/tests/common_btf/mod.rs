//! Ground truth for the BTF tests: `bpftool btf dump file ... format raw`, parsed here as text
//! (independently of `oomwatch::source::btf`). Shared by `tests/btf.rs` (this host's BTF) and
//! `tests/btf_debian.rs` (the Debian kernels' BTF under `target/vm/`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// One `[id] KIND 'name' key=value...` entry of the raw dump, with its indented lines.
#[derive(Debug, Default)]
pub struct Raw {
    pub kind: String,
    pub name: String,
    pub attrs: HashMap<String, String>,
    /// Members, enumerators or parameters: (name, attributes).
    pub items: Vec<(String, HashMap<String, String>)>,
}

impl Raw {
    pub fn num(&self, key: &str) -> i64 {
        num(&self.attrs, key)
    }
}

pub fn num(attrs: &HashMap<String, String>, key: &str) -> i64 {
    let v = attrs
        .get(key)
        .unwrap_or_else(|| panic!("no `{key}` in {attrs:?}"));
    let digits: String = v
        .chars()
        .take_while(|c| *c == '-' || c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("`{key}={v}` is not a number"))
}

/// Splits `'name' k=v k=v` (the name is optional) into the name and the attributes.
pub fn split_attrs(s: &str) -> (String, HashMap<String, String>) {
    let (name, rest) = match s.strip_prefix('\'') {
        Some(r) => {
            let end = r.find('\'').expect("closing quote");
            (r[..end].to_string(), &r[end + 1..])
        }
        None => (String::new(), s),
    };
    let attrs = rest
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_end_matches(',').to_string()))
        .collect();
    (name, attrs)
}

pub struct Dump(pub HashMap<i64, Raw>);

pub fn parse_dump(text: &str) -> Dump {
    let mut types = HashMap::new();
    let mut cur: Option<(i64, Raw)> = None;
    for line in text.lines() {
        if let Some(item) = line.strip_prefix('\t') {
            let raw = &mut cur.as_mut().expect("member line before any type").1;
            raw.items.push(split_attrs(item));
        } else if let Some(rest) = line.strip_prefix('[') {
            let (id, rest) = rest.split_once("] ").expect("`[id] `");
            let (kind, rest) = rest.split_once(' ').expect("kind");
            let (name, attrs) = split_attrs(rest);
            let raw = Raw {
                kind: kind.to_string(),
                name,
                attrs,
                items: Vec::new(),
            };
            types.extend(cur.replace((id.parse().expect("numeric id"), raw)));
        }
    }
    types.extend(cur);
    Dump(types)
}

impl Dump {
    pub fn get(&self, id: i64) -> &Raw {
        self.0
            .get(&id)
            .unwrap_or_else(|| panic!("no type [{id}] in the dump"))
    }
    pub fn find(&self, kinds: &[&str], name: &str) -> i64 {
        let mut ids: Vec<i64> = self
            .0
            .iter()
            .filter(|(_, t)| t.name == name && kinds.contains(&t.kind.as_str()))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        *ids.first()
            .unwrap_or_else(|| panic!("dump has no {kinds:?} `{name}`"))
    }
    /// Strips typedef/const/volatile/restrict/type-tag.
    pub fn resolve(&self, mut id: i64) -> i64 {
        while id != 0
            && ["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"]
                .contains(&self.get(id).kind.as_str())
        {
            id = self.get(id).num("type_id");
        }
        id
    }
    pub fn is_composite(&self, id: i64) -> bool {
        id != 0 && ["STRUCT", "UNION"].contains(&self.get(id).kind.as_str())
    }
    /// (bit offset, type id) of `name` in composite `id`, descending `(anon)` members.
    pub fn member(&self, id: i64, name: &str) -> Option<(i64, i64)> {
        self.get(id).items.iter().find_map(|(n, a)| {
            let (off, ty) = (num(a, "bits_offset"), num(a, "type_id"));
            if n == name {
                Some((off, ty))
            } else if n == "(anon)" && self.is_composite(self.resolve(ty)) {
                self.member(self.resolve(ty), name)
                    .map(|(o, t)| (o + off, t))
            } else {
                None
            }
        })
    }
    /// (byte offset, type id) of a dotted member path.
    pub fn path(&self, strukt: &str, path: &str) -> (i64, i64) {
        let (mut cur, mut bits, mut ty) = (self.find(&["STRUCT", "UNION"], strukt), 0, 0);
        for part in path.split('.') {
            if ty != 0 {
                cur = self.resolve(ty);
            }
            let (off, t) = self
                .member(cur, part)
                .unwrap_or_else(|| panic!("dump: no `{part}` in [{cur}]"));
            bits += off;
            ty = t;
        }
        assert_eq!(
            bits % 8,
            0,
            "{strukt}.{path} is not byte aligned in the dump"
        );
        (bits / 8, ty)
    }
    pub fn size(&self, id: i64) -> i64 {
        let t = self.get(self.resolve(id));
        match t.kind.as_str() {
            "PTR" => 8,
            "ARRAY" => t.num("nr_elems") * self.size(t.num("type_id")),
            _ => t.num("size"),
        }
    }
    /// The value of enumerator `item` of `enum name`, if it has one.
    pub fn enum_val(&self, name: &str, item: &str) -> Option<i64> {
        let id = self.find(&["ENUM", "ENUM64"], name);
        let items = &self.get(id).items;
        items
            .iter()
            .find(|(n, _)| n == item)
            .map(|(_, a)| num(a, "val"))
    }
    /// C names of the parameters of `btf_trace_<tp>` after its leading `void *`.
    pub fn tracepoint_params(&self, tp: &str) -> Vec<String> {
        let ptr = self
            .get(self.find(&["TYPEDEF"], &format!("btf_trace_{tp}")))
            .num("type_id");
        let proto = self.get(self.get(ptr).num("type_id"));
        assert_eq!(proto.kind, "FUNC_PROTO", "btf_trace_{tp}");
        proto.items[1..]
            .iter()
            .map(|(_, a)| self.c_name(num(a, "type_id")))
            .collect()
    }
    /// C-like type name, enough for tracepoint parameters.
    pub fn c_name(&self, id: i64) -> String {
        if id == 0 {
            return "void".into();
        }
        let t = self.get(id);
        match t.kind.as_str() {
            "PTR" => {
                let inner = self.c_name(t.num("type_id"));
                if inner.ends_with('*') {
                    inner + "*"
                } else {
                    inner + " *"
                }
            }
            "CONST" => format!("const {}", self.c_name(t.num("type_id"))),
            "STRUCT" | "UNION" | "ENUM" => format!("{} {}", t.kind.to_lowercase(), t.name),
            _ => t.name.clone(),
        }
    }
}

/// `bpftool btf dump file PATH format raw`, parsed; `Err` says why it could not run.
pub fn bpftool_dump(path: &Path) -> Result<Dump, String> {
    let run = |bin: &str| {
        Command::new(bin)
            .args(["btf", "dump", "file"])
            .arg(path)
            .args(["format", "raw"])
            .output()
    };
    let out = run("bpftool").or_else(|_| run("/usr/sbin/bpftool"));
    match out {
        Ok(o) if o.status.success() => Ok(parse_dump(
            &String::from_utf8(o.stdout).map_err(|e| format!("bpftool output: {e}"))?,
        )),
        Ok(o) => Err(format!(
            "bpftool failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!(
            "bpftool not runnable ({e}); apt-get install bpftool"
        )),
    }
}
