//! Real-kernel checks of `oomwatch::probe::btf` against `/sys/kernel/btf/vmlinux`.
//!
//! Ground truth is computed independently from `bpftool btf dump file ... format raw`, parsed
//! here as text. Without the file or bpftool the tests skip with a message, unless
//! `OOMWATCH_REQUIRE_REAL_KERNEL=1`, in which case they fail.
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use oomwatch::probe::btf::Btf;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// One `[id] KIND 'name' key=value...` entry of the raw dump, with its indented lines.
#[derive(Debug, Default)]
struct Raw {
    kind: String,
    name: String,
    attrs: HashMap<String, String>,
    /// Members, enumerators or parameters: (name, attributes).
    items: Vec<(String, HashMap<String, String>)>,
}

impl Raw {
    fn num(&self, key: &str) -> i64 {
        num(&self.attrs, key)
    }
}

fn num(attrs: &HashMap<String, String>, key: &str) -> i64 {
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
fn split_attrs(s: &str) -> (String, HashMap<String, String>) {
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

struct Dump(HashMap<i64, Raw>);

fn parse_dump(text: &str) -> Dump {
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
    fn get(&self, id: i64) -> &Raw {
        self.0
            .get(&id)
            .unwrap_or_else(|| panic!("no type [{id}] in the dump"))
    }
    fn find(&self, kinds: &[&str], name: &str) -> i64 {
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
    fn resolve(&self, mut id: i64) -> i64 {
        while id != 0
            && ["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"]
                .contains(&self.get(id).kind.as_str())
        {
            id = self.get(id).num("type_id");
        }
        id
    }
    fn is_composite(&self, id: i64) -> bool {
        id != 0 && ["STRUCT", "UNION"].contains(&self.get(id).kind.as_str())
    }
    /// (bit offset, type id) of `name` in composite `id`, descending `(anon)` members.
    fn member(&self, id: i64, name: &str) -> Option<(i64, i64)> {
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
    fn path(&self, strukt: &str, path: &str) -> (i64, i64) {
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
    fn size(&self, id: i64) -> i64 {
        let t = self.get(self.resolve(id));
        match t.kind.as_str() {
            "PTR" => 8,
            "ARRAY" => t.num("nr_elems") * self.size(t.num("type_id")),
            _ => t.num("size"),
        }
    }
    /// C-like type name, enough for tracepoint parameters.
    fn c_name(&self, id: i64) -> String {
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

fn require_real() -> bool {
    std::env::var("OOMWATCH_REQUIRE_REAL_KERNEL").as_deref() == Ok("1")
}

fn skip(reason: &str) {
    assert!(
        !require_real(),
        "OOMWATCH_REQUIRE_REAL_KERNEL=1 but {reason}"
    );
    eprintln!("skipping real-kernel BTF test: {reason}");
}

/// The parsed vmlinux BTF and bpftool's raw dump of it, or `None` (after printing why).
fn real() -> Option<&'static (Btf, Dump)> {
    static REAL: OnceLock<Result<(Btf, Dump), String>> = OnceLock::new();
    let got = REAL.get_or_init(|| {
        if !Path::new(VMLINUX).exists() {
            return Err(format!(
                "{VMLINUX} is missing (kernel without CONFIG_DEBUG_INFO_BTF)"
            ));
        }
        let run = |bin: &str| {
            Command::new(bin)
                .args(["btf", "dump", "file", VMLINUX, "format", "raw"])
                .output()
        };
        let out = run("bpftool").or_else(|_| run("/usr/sbin/bpftool"));
        let out = match out {
            Ok(o) if o.status.success() => o.stdout,
            Ok(o) => {
                return Err(format!(
                    "bpftool failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "bpftool not runnable ({e}); apt-get install bpftool"
                ))
            }
        };
        let btf = Btf::from_file(Path::new(VMLINUX)).expect("vmlinux BTF parses");
        Ok((
            btf,
            parse_dump(&String::from_utf8(out).expect("UTF-8 dump")),
        ))
    });
    got.as_ref().map_err(|e| skip(e)).ok()
}

const PATHS: &[(&str, &str)] = &[
    ("task_struct", "pid"),
    ("task_struct", "tgid"),
    ("task_struct", "comm"),
    ("task_struct", "signal"),
    ("task_struct", "cgroups"),
    ("signal_struct", "oom_score_adj"),
    ("css_set", "subsys"),
    ("cgroup_subsys_state", "cgroup"),
    ("cgroup", "kn"),
    ("kernfs_node", "id"),
    ("oom_control", "memcg"),
    ("oom_control", "gfp_mask"),
    ("oom_control", "order"),
    ("oom_control", "totalpages"),
    ("oom_control", "chosen"),
    ("oom_control", "chosen_points"),
    ("oom_control", "constraint"),
];

/// Paths the agent does not use, exercising anonymous unions and nested embedded structs.
const EXTRA_PATHS: &[(&str, &str)] = &[
    ("kernfs_node", "attr"),
    ("page", "mapping"),
    ("page", "_mapcount"),
    ("task_struct", "se.vruntime"),
    ("task_struct", "thread_info.flags"),
];

#[test]
fn real_kernel_member_offsets_and_sizes_match_bpftool() {
    let Some((btf, dump)) = real() else { return };
    for &(s, m) in PATHS.iter().chain(EXTRA_PATHS) {
        let (off, ty) = dump.path(s, m);
        let got = btf
            .member_offset(s, m)
            .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
        assert_eq!(i64::from(got), off, "offset of {s}.{m}");
        let size = btf
            .member_size(s, m)
            .unwrap_or_else(|e| panic!("{s}.{m}: {e}"));
        assert_eq!(i64::from(size), dump.size(ty), "size of {s}.{m}");
        println!("{s}.{m}: offset {got}, size {size}");
    }
    let size = btf.struct_size("oom_control").expect("oom_control");
    assert_eq!(
        i64::from(size),
        dump.get(dump.find(&["STRUCT"], "oom_control")).num("size")
    );
    let e = btf
        .member_offset("task_struct", "foo")
        .expect_err("no such member");
    assert_eq!(e.to_string(), "struct `task_struct` has no member `foo`");
}

#[test]
fn real_kernel_enum_and_funcs_match_bpftool() {
    let Some((btf, dump)) = real() else { return };
    let id = dump.find(&["ENUM", "ENUM64"], "cgroup_subsys_id");
    let items = &dump.get(id).items;
    let (_, attrs) = items
        .iter()
        .find(|(n, _)| n == "memory_cgrp_id")
        .expect("memory_cgrp_id");
    let want = num(attrs, "val");
    assert_eq!(
        btf.enum_value(Some("cgroup_subsys_id"), "memory_cgrp_id")
            .expect("named"),
        want
    );
    assert_eq!(
        btf.enum_value(None, "memory_cgrp_id").expect("any enum"),
        want
    );
    for f in [
        "out_of_memory",
        "mark_oom_victim",
        "__oom_kill_process",
        "no_such_fn_xyz",
    ] {
        let in_dump = dump.0.values().any(|t| t.kind == "FUNC" && t.name == f);
        assert_eq!(btf.has_func(f), in_dump, "has_func({f})");
    }
}

#[test]
fn real_kernel_mark_victim_tracepoint_params() {
    let Some((btf, dump)) = real() else { return };
    let ptr = dump
        .get(dump.find(&["TYPEDEF"], "btf_trace_mark_victim"))
        .num("type_id");
    let proto = dump.get(dump.get(ptr).num("type_id"));
    assert_eq!(proto.kind, "FUNC_PROTO");
    let want: Vec<String> = proto.items[1..]
        .iter()
        .map(|(_, a)| dump.c_name(num(a, "type_id")))
        .collect();
    let got = btf.tracepoint_params("mark_victim").expect("mark_victim");
    println!("btf_trace_mark_victim params: {got:?}");
    assert_eq!(got, want);
    if proto.items.len() == 3 {
        assert_eq!(got, ["struct task_struct *", "uid_t"]);
    }
}

#[test]
fn real_kernel_parse_and_lookup_timing() {
    if real().is_none() {
        return;
    }
    let start = Instant::now();
    let btf = Btf::from_file(Path::new(VMLINUX)).expect("vmlinux BTF parses");
    let parsed = start.elapsed();
    for &(s, m) in PATHS {
        btf.member_offset(s, m).expect("offset");
    }
    btf.enum_value(Some("cgroup_subsys_id"), "memory_cgrp_id")
        .expect("enum");
    btf.tracepoint_params("mark_victim").expect("tracepoint");
    let total = start.elapsed();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "{profile}: parse {parsed:?}, parse + {} lookups {total:?}",
        PATHS.len() + 2
    );
}
