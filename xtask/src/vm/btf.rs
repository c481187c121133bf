//! The BTF of each vm-test kernel, for the offset tests (`oomwatch/tests/btf_debian.rs`):
//! x86-64, find the compressed kernel inside the bzImage, decompress it with the system tools,
//! and dump its `.BTF` section; arm64, find the BTF blob in the uncompressed `Image` by its
//! header. Written to `target/vm/<release>/vmlinux.btf` (cached; the vmlinux is deleted).

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use super::STEP;
use crate::util;
use crate::vm::{arch::Arch, kernel::Kernel};

/// llvm-objcopy of the project's LLVM (installed by `cargo xtask setup`); else the one on PATH.
const LLVM_OBJCOPY: &str = "/usr/lib/llvm-22/bin/llvm-objcopy";

/// The compressions a bzImage payload may use that Debian kernels use (6.1: LZ4, 6.12: zstd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Zstd,
    Xz,
    Gzip,
    /// The legacy LZ4 frame (`lz4 -l`), which is what the kernel's build writes.
    Lz4,
}

impl Codec {
    const ALL: [Codec; 4] = [Codec::Zstd, Codec::Xz, Codec::Gzip, Codec::Lz4];

    fn magic(self) -> &'static [u8] {
        match self {
            Codec::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Codec::Xz => &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
            Codec::Gzip => &[0x1f, 0x8b, 0x08],
            Codec::Lz4 => &[0x02, 0x21, 0x4c, 0x18],
        }
    }

    /// The decompressor reading stdin and writing stdout. The payload is followed by other
    /// bytes (its size, padding), which the tools report as an error after writing everything:
    /// their exit status is therefore not used, the output is checked instead.
    fn command(self) -> Command {
        let (tool, args): (&str, &[&str]) = match self {
            Codec::Zstd => ("zstd", &["-dc"]),
            Codec::Xz => ("xz", &["-dc", "--single-stream"]),
            Codec::Gzip => ("gzip", &["-dc"]),
            Codec::Lz4 => ("lz4", &["-dc"]),
        };
        let mut cmd = Command::new(tool);
        cmd.args(args);
        cmd
    }

    fn name(self) -> &'static str {
        match self {
            Codec::Zstd => "zstd",
            Codec::Xz => "xz",
            Codec::Gzip => "gzip",
            Codec::Lz4 => "lz4",
        }
    }
}

/// Every offset in `data` where a compression magic starts, in file order.
pub fn candidates(data: &[u8]) -> Vec<(usize, Codec)> {
    let mut found = Vec::new();
    for (i, &b) in data.iter().enumerate() {
        for codec in Codec::ALL {
            let magic = codec.magic();
            if b == magic[0] && data[i..].starts_with(magic) {
                found.push((i, codec));
            }
        }
    }
    found
}

/// Decompresses `data[offset..]` with `codec` into `out`; true when the result is an ELF file.
fn decompress(data: &[u8], offset: usize, codec: Codec, out: &Path) -> Result<bool> {
    let file = fs::File::create(out).with_context(|| format!("[vm] create {}", out.display()))?;
    let mut cmd = codec.command();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("[vm] cannot run {}", util::describe(&cmd)))?;
    let mut stdin = child.stdin.take().context("[vm] decompressor stdin")?;
    thread::scope(|s| {
        // The tool may stop reading early (a false candidate): a broken pipe is expected.
        s.spawn(move || {
            let _ = stdin.write_all(&data[offset..]);
        });
        child.wait()
    })
    .context("[vm] waiting for the decompressor")?;
    let mut head = [0u8; 4];
    let elf = fs::File::open(out)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == *b"\x7fELF";
    Ok(elf)
}

/// Tries each candidate in file order until one decompresses to an ELF file at `out`.
pub fn decompress_elf(data: &[u8], out: &Path) -> Result<(usize, Codec)> {
    let found = candidates(data);
    for &(offset, codec) in &found {
        if decompress(data, offset, codec, out)? {
            return Ok((offset, codec));
        }
    }
    let _ = fs::remove_file(out);
    bail!(
        "[{STEP}] none of the {} compression magics found decompresses to an ELF file",
        found.len()
    )
}

fn objcopy() -> PathBuf {
    if Path::new(LLVM_OBJCOPY).is_file() {
        PathBuf::from(LLVM_OBJCOPY)
    } else {
        PathBuf::from("llvm-objcopy")
    }
}

/// Writes the kernel's `.BTF` section to `target/vm/<release>/vmlinux.btf`, unless that file is
/// already newer than the kernel's image. Returns its path.
pub fn extract(k: &Kernel, vm_dir: &Path) -> Result<PathBuf> {
    let release = k.release();
    let dir = vm_dir.join(release);
    fs::create_dir_all(&dir)?;
    let btf = dir.join("vmlinux.btf");
    let kib = |p: &Path| fs::metadata(p).map(|m| m.len() / 1024).unwrap_or(0);
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(b), Some(z)) = (mtime(&btf), mtime(&k.image)) {
        if b > z {
            eprintln!(
                "[{STEP}] BTF of {release}: {} ({} KiB), cached",
                btf.display(),
                kib(&btf)
            );
            return Ok(btf);
        }
    }
    let started = Instant::now();
    let partial = dir.join("vmlinux.btf.partial");
    let found = match k.arch {
        Arch::X86_64 => from_bzimage(k, &dir, &partial)?,
        Arch::Arm64 => from_raw_image(k, &partial)?,
    };
    let blob = fs::read(&partial)?;
    if !blob.starts_with(&[0x9f, 0xeb]) {
        let _ = fs::remove_file(&partial);
        bail!("[{STEP}] the .BTF section of {release} does not start with the BTF magic");
    }
    fs::rename(&partial, &btf)?;
    eprintln!(
        "[{STEP}] BTF of {release}: {} ({} KiB), {found} in {:.1}s",
        btf.display(),
        kib(&btf),
        started.elapsed().as_secs_f64()
    );
    Ok(btf)
}

/// x86-64: the bzImage's compressed payload is an ELF vmlinux, whose `.BTF` section
/// llvm-objcopy dumps to `partial`. Says where the payload was.
fn from_bzimage(k: &Kernel, dir: &Path, partial: &Path) -> Result<String> {
    let data =
        fs::read(&k.vmlinuz).with_context(|| format!("[vm] read {}", k.vmlinuz.display()))?;
    let vmlinux = dir.join("vmlinux.partial");
    let result = decompress_elf(&data, &vmlinux).and_then(|found| {
        let mut cmd = Command::new(objcopy());
        cmd.arg("--dump-section")
            .arg(format!(".BTF={}", partial.display()))
            .arg(&vmlinux)
            .arg("/dev/null");
        util::run(STEP, &mut cmd).context("[vm] dump the .BTF section")?;
        Ok(found)
    });
    let _ = fs::remove_file(&vmlinux);
    let (offset, codec) = result
        .with_context(|| format!("[vm] cannot extract the BTF of {}", k.vmlinuz.display()))?;
    Ok(format!(
        "from the {} payload at offset {offset}",
        codec.name()
    ))
}

/// arm64: the `Image` is the kernel's memory image without section headers; the BTF blob is
/// found by its header ([`raw_btf`]) and written to `partial`.
fn from_raw_image(k: &Kernel, partial: &Path) -> Result<String> {
    let data = fs::read(&k.image).with_context(|| format!("[vm] read {}", k.image.display()))?;
    let Some((offset, blob)) = raw_btf(&data) else {
        bail!("[{STEP}] no BTF header in {}", k.image.display());
    };
    fs::write(partial, blob)?;
    Ok(format!("from the Image at offset {offset}"))
}

fn le32(data: &[u8], at: usize) -> Option<usize> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
}

/// The first BTF blob in `data` and its offset: a header (magic `0xeb9f` little-endian, version
/// 1, flags 0, header length 24) whose type section starts right after it and whose string
/// section follows the types and starts with the empty string, all inside `data`.
pub fn raw_btf(data: &[u8]) -> Option<(usize, &[u8])> {
    const HEADER: [u8; 8] = [0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
    let blob_at = |i: usize| -> Option<&[u8]> {
        let (type_off, type_len) = (le32(data, i + 8)?, le32(data, i + 12)?);
        let (str_off, str_len) = (le32(data, i + 16)?, le32(data, i + 20)?);
        let strings = i + 24 + str_off;
        let end = strings.checked_add(str_len)?;
        let valid = type_off == 0 && type_len > 0 && str_off == type_len && str_len > 0;
        (valid && *data.get(strings)? == 0).then_some(data.get(i..end)?)
    };
    data.windows(HEADER.len())
        .enumerate()
        .filter(|(_, w)| *w == HEADER)
        .find_map(|(i, _)| blob_at(i).map(|b| (i, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_found_in_file_order() {
        let mut buf = vec![0x1f, 0x8b]; // a gzip magic cut short: not a candidate
        buf.extend([0u8; 5]);
        buf.extend([0x28, 0xb5, 0x2f, 0xfd, 1, 2]); // zstd at 7
        buf.extend([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]); // xz at 13
        buf.extend([0x02, 0x21, 0x4c, 0x18]); // lz4 (legacy) at 19
        buf.extend([0x1f, 0x8b, 0x08]); // gzip at 23
        buf.extend([0xfd, 0x37, 0x7a, 0x58, 0x5a]); // xz without its final 0: not a candidate
        assert_eq!(
            candidates(&buf),
            [
                (7, Codec::Zstd),
                (13, Codec::Xz),
                (19, Codec::Lz4),
                (23, Codec::Gzip)
            ]
        );
        assert!(candidates(&[]).is_empty());
        assert!(candidates(&[0x28, 0xb5, 0x2f]).is_empty());
    }

    #[test]
    fn false_candidates_are_skipped_until_an_elf_decompresses() {
        let dir = std::env::temp_dir().join(format!("xtask-vm-btf-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let elf = b"\x7fELF\x02\x01\x01 not really a kernel".repeat(50);
        let plain = dir.join("elf");
        fs::write(&plain, &elf).unwrap();
        let gz = Command::new("gzip").arg("-c").arg(&plain).output().unwrap();
        assert!(gz.status.success());
        // A bzImage-like buffer: set-up code, a false zstd magic, a gzip stream that does not
        // hold an ELF file, the payload, then trailing bytes (the payload's size).
        let mut buf = b"MZ setup code".to_vec();
        buf.extend([0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff]);
        let not_elf = Command::new("sh")
            .arg("-c")
            .arg("printf 'plain text' | gzip -c")
            .output()
            .unwrap();
        buf.extend(&not_elf.stdout);
        let at = buf.len();
        buf.extend(&gz.stdout);
        buf.extend(0x1234u32.to_le_bytes());
        let out = dir.join("vmlinux");
        assert_eq!(decompress_elf(&buf, &out).unwrap(), (at, Codec::Gzip));
        assert_eq!(fs::read(&out).unwrap(), elf);
        let err = decompress_elf(b"no payload here", &out).unwrap_err();
        assert!(err.to_string().contains("none of the 0"), "{err}");
        assert!(!out.exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_raw_btf_blob_is_found_by_its_header() {
        let blob = |types: &[u8], strings: &[u8]| {
            let mut b = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
            for v in [0, types.len(), types.len(), strings.len()] {
                b.extend((v as u32).to_le_bytes());
            }
            b.extend(types);
            b.extend(strings);
            b
        };
        let good = blob(b"TYPES...", b"\0name\0");
        // A header whose strings do not start with the empty string is not one.
        let mut image = b"code".to_vec();
        image.extend(blob(b"TYPES...", b"xname\0"));
        let at = image.len();
        image.extend(&good);
        image.extend(b"more code");
        assert_eq!(raw_btf(&image), Some((at, good.as_slice())));
        // Cut short: its sections do not fit.
        assert_eq!(raw_btf(&good[..good.len() - 1]), None);
        assert_eq!(raw_btf(b""), None);
    }
}
