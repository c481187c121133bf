//! Loading and attaching one program each; a failure is a reason string for the probe table.
use aya::programs::{BtfTracePoint, FEntry, FExit, KProbe, TracePoint};
use aya::Ebpf;

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{e}"))
}

/// `tp_btf/<tracepoint>`.
pub fn btf_tracepoint(ebpf: &mut Ebpf, prog: &str, tp: &str, btf: &aya::Btf) -> Result<(), String> {
    let p: &mut BtfTracePoint = program(ebpf, prog)?;
    p.load(tp, btf).map_err(|e| format!("load: {e}"))?;
    p.attach().map(drop).map_err(|e| format!("attach: {e}"))
}

/// `tracepoint/<category>/<name>`.
pub fn tracepoint(ebpf: &mut Ebpf, prog: &str, category: &str, name: &str) -> Result<(), String> {
    let p: &mut TracePoint = program(ebpf, prog)?;
    p.load().map_err(|e| format!("load: {e}"))?;
    p.attach(category, name)
        .map(drop)
        .map_err(|e| format!("attach: {e}"))
}

/// `fentry/<function>`.
pub fn fentry(ebpf: &mut Ebpf, prog: &str, function: &str, btf: &aya::Btf) -> Result<(), String> {
    let p: &mut FEntry = program(ebpf, prog)?;
    p.load(function, btf).map_err(|e| explain("load", e))?;
    p.attach().map(drop).map_err(|e| explain("attach", e))
}

/// `fexit/<function>`.
pub fn fexit(ebpf: &mut Ebpf, prog: &str, function: &str, btf: &aya::Btf) -> Result<(), String> {
    let p: &mut FExit = program(ebpf, prog)?;
    p.load(function, btf).map_err(|e| explain("load", e))?;
    p.attach().map(drop).map_err(|e| explain("attach", e))
}

/// Words for the common failures, so the log says why rather than which file aya opened.
fn explain(stage: &str, e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    let text = text
        .trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end();
    if text.contains("/sys/bus/event_source/devices/kprobe") {
        format!("{stage}: this kernel has no kprobe support (CONFIG_KPROBES off): {text}")
    } else if text.contains("Operation not permitted") {
        format!(
            "{stage}: the kernel refused it (EPERM; e.g. lockdown or no BTF trampolines): {text}"
        )
    } else {
        format!("{stage}: {text}")
    }
}

/// `kprobe/<function>` (or `kretprobe/<function>`: the program's section says which).
pub fn kprobe(ebpf: &mut Ebpf, prog: &str, function: &str) -> Result<(), String> {
    let p: &mut KProbe = program(ebpf, prog)?;
    p.load().map_err(|e| explain("load", e))?;
    p.attach(function, 0)
        .map(drop)
        .map_err(|e| explain("attach", e))
}
