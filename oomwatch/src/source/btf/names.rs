//! Types spelled as C spells them: function prototypes and raw-tracepoint parameters, which
//! the agent compares against what its programs expect.
use super::{
    word, Btf, BtfError, Result, ARRAY, BUDGET, CONST, ENUM, ENUM64, FUNC, FUNC_PROTO, FWD,
    MAX_DEPTH, PTR, RESTRICT, STRUCT, TYPEDEF, TYPE_TAG, UNION, VOLATILE,
};

impl Btf {
    /// A function's prototype as C spells it without the name, e.g.
    /// `long int (struct task_struct *, long unsigned int)`; `None` when BTF has no such FUNC.
    pub fn func_signature(&self, name: &str) -> Result<Option<String>, BtfError> {
        match self.named(name, |k| k == FUNC).next() {
            Some(f) => self.type_name(self.ty(f)?.size_type).map(Some),
            None => Ok(None),
        }
    }

    /// The C-like type names of the parameters of a raw tracepoint, from the kernel's
    /// `typedef void (*btf_trace_<name>)(void *__data, ...)`, excluding the leading `void *`.
    /// Example on 6.18 for "mark_victim": `["struct task_struct *", "uid_t"]`; on older
    /// kernels `["int"]`.
    pub fn tracepoint_params(&self, tp_name: &str) -> Result<Vec<String>, BtfError> {
        let bad = || BtfError::BadTracepoint(tp_name.to_string());
        let typedef = format!("btf_trace_{tp_name}");
        let mut typedefs = self.named(&typedef, |k| k == TYPEDEF);
        let missing = || BtfError::NoTracepoint(tp_name.to_string());
        let td = typedefs.next().ok_or_else(missing)?;
        // Resolve a pointer `id` to its (resolved) target, if it is a pointer.
        let deref = |id: u32| -> Result<Option<u32>> {
            let id = self.resolve(id)?;
            match self.kind_of(id)? {
                PTR => Ok(Some(self.resolve(self.ty(id)?.size_type)?)),
                _ => Ok(None),
            }
        };
        let proto = deref(self.ty(td)?.size_type)?.ok_or_else(bad)?;
        if self.kind_of(proto)? != FUNC_PROTO {
            return Err(bad());
        }
        let mut params = self.records(&self.ty(proto)?, 8).map(|r| word(r, 4));
        if deref(params.next().ok_or_else(bad)?)? != Some(0) {
            return Err(bad());
        }
        let mut budget = BUDGET;
        params.map(|p| self.name_rec(p, 0, &mut budget)).collect()
    }

    /// A C-like spelling of type `id` (`struct task_struct *`, `const char *`, `uid_t`).
    pub(super) fn type_name(&self, id: u32) -> Result<String> {
        let mut budget = BUDGET;
        self.name_rec(id, 0, &mut budget)
    }

    fn name_rec(&self, id: u32, depth: usize, budget: &mut usize) -> Result<String> {
        let left = budget.checked_sub(1).filter(|_| depth < MAX_DEPTH);
        *budget = left.ok_or(BtfError::TooDeep(id))?;
        if id == 0 {
            return Ok("void".to_string());
        }
        let t = self.ty(id)?;
        let (name, target) = (self.name_lossy(id), t.size_type);
        let qualifier = |q: &str, b: &mut usize| -> Result<String> {
            let s = self.name_rec(target, depth + 1, b)?;
            // `const char *` but `char *const`.
            match s.ends_with('*') {
                true => Ok(format!("{s}{q}")),
                false => Ok(format!("{q} {s}")),
            }
        };
        let s = match t.kind() {
            STRUCT => format!("struct {name}"),
            UNION => format!("union {name}"),
            ENUM | ENUM64 => format!("enum {name}"),
            FWD if t.kflag() => format!("union {name}"),
            FWD => format!("struct {name}"),
            PTR if self.kind_of(target)? == FUNC_PROTO => {
                self.proto_name(target, "(*)", depth, budget)?
            }
            PTR => {
                let s = self.name_rec(target, depth + 1, budget)?;
                let sep = if s.ends_with('*') { "" } else { " " };
                format!("{s}{sep}*")
            }
            CONST => qualifier("const", budget)?,
            VOLATILE => qualifier("volatile", budget)?,
            RESTRICT => qualifier("restrict", budget)?,
            TYPE_TAG => self.name_rec(target, depth + 1, budget)?,
            ARRAY => {
                let at = t.extra as usize;
                let elem = self.name_rec(word(&self.type_sec, at), depth + 1, budget)?;
                format!("{elem}[{}]", word(&self.type_sec, at + 8))
            }
            FUNC_PROTO => self.proto_name(id, "", depth, budget)?,
            _ => name,
        };
        // Output is charged too: shared types could otherwise spell far more than the BTF holds.
        *budget = budget.checked_sub(s.len()).ok_or(BtfError::TooDeep(id))?;
        Ok(s)
    }

    /// `ret declarator(args)` for FUNC_PROTO `id`; a trailing unnamed void param is `...`.
    fn proto_name(&self, id: u32, decl: &str, depth: usize, b: &mut usize) -> Result<String> {
        let t = self.ty(id)?;
        let mut s = format!("{} {decl}(", self.name_rec(t.size_type, depth + 1, b)?);
        for (i, r) in self.records(&t, 8).enumerate() {
            let arg = match (word(r, 0), word(r, 4)) {
                (0, 0) => "...".to_string(),
                (_, ty) => self.name_rec(ty, depth + 1, b)?,
            };
            s += &format!("{}{arg}", if i > 0 { ", " } else { "" });
        }
        Ok(s + ")")
    }
}
