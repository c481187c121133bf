//! Property tests with a seeded xorshift generator: random bytes, mutated real files and
//! random numbers never panic a host parser, the risk rules or a whole collection.
use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A number biased towards edge values.
    fn number(&mut self) -> u64 {
        match self.below(4) {
            0 => u64::MAX - self.below(3) as u64,
            1 => self.below(3) as u64,
            2 => self.next() >> self.below(64),
            _ => self.next(),
        }
    }
}

/// Bytes biased towards the characters the parsers care about.
fn random_text(rng: &mut XorShift, max_len: usize) -> String {
    const INTERESTING: &[u8] = b" \t\n:,=[]-+.0123456789kBNodezonesomefullavgtotal";
    let len = rng.below(max_len + 1);
    let bytes: Vec<u8> = (0..len)
        .map(|_| match rng.below(3) {
            0 => INTERESTING[rng.below(INTERESTING.len())],
            1 => b'a' + rng.below(26) as u8,
            _ => rng.next() as u8,
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A real file with random edits: truncation, deletion, replacement, duplication.
fn mutate(rng: &mut XorShift, text: &str) -> String {
    let mut b = text.as_bytes().to_vec();
    for _ in 0..=rng.below(6) {
        let at = if b.is_empty() { 0 } else { rng.below(b.len()) };
        match rng.below(5) {
            0 => b.truncate(at),
            1 if !b.is_empty() => {
                b.remove(at);
            }
            2 if !b.is_empty() => b[at] = rng.next() as u8,
            3 => {
                let piece = b[at..].to_vec();
                b.extend_from_slice(&piece);
            }
            _ => b.insert(at, b"\n :=[]0"[rng.below(7)]),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

const SAMPLES: &[&str] = &[
    "Node 0, zone      DMA\n  pages free     3840\n        min      26\n        low      32\n        \
     high     38\n        spanned  4095\n        present  3998\n        managed  3840\n  \
     pagesets\n    cpu: 0\n              count: 45\n              high:  378\n",
    "MemTotal:       24684084 kB\nMemFree:        24014760 kB\nMemAvailable:   24231200 kB\n\
     SwapTotal:             0 kB\nCommitLimit:    12342040 kB\nCommitted_AS:      63640 kB\n",
    "Node 0 MemTotal:        9660620 kB\nNode 0 MemFree:         8991348 kB\n",
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=967314\n\
     full avg10=0.00 avg60=0.00 avg300=0.00 total=349368\n",
    "nr_free_pages 2085177\noom_kill 955\n",
    "low 0\nhigh 12\nmax 40\noom 2\noom_kill 2\noom_group_kill 0\n",
    "oom_kill_disable 0\nunder_oom 1\noom_kill 5\n",
    "always [madvise] never\n",
    "67584\n",
];

fn run_parsers(text: &str) {
    let zones = zoneinfo::parse(text);
    let _ = zoneinfo::lowmem_pages(&zones);
    let _ = zoneinfo::populated_lowmem_zones(&zones);
    let _ = sysctl::parse_int::<i64>(text);
    let _ = sysctl::parse_int::<u64>(text);
    let _ = sysctl::parse_bracketed(text);
    let _ = meminfo::parse_meminfo(text);
    let _ = meminfo::parse_node_meminfo(text);
    let _ = meminfo::node_number(text);
    for line in text.lines() {
        let _ = meminfo::parse_line(line);
        let _ = psi::parse_line(line);
    }
    let _ = psi::parse(text);
    let _ = vmstat::parse_oom_kill(text);
    let _ = memcg_events::parse_memory_events(text);
    let _ = memcg_events::parse_oom_control(text);
}

#[test]
fn parsers_survive_random_bytes() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..20_000 {
        run_parsers(&random_text(&mut rng, 300));
    }
}

#[test]
fn parsers_survive_mutated_real_files() {
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    for _ in 0..5_000 {
        for sample in SAMPLES {
            run_parsers(&mutate(&mut rng, sample));
            // Every prefix, i.e. a read cut short anywhere.
            let cut = rng.below(sample.len() + 1);
            run_parsers(&String::from_utf8_lossy(&sample.as_bytes()[..cut]));
        }
    }
}

#[test]
fn arithmetic_and_rules_survive_any_numbers() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..20_000 {
        let x = rng.number();
        let r = sysctl::int_sqrt(x);
        assert!(u128::from(r) * u128::from(r) <= u128::from(x));
        assert!(u128::from(r + 1) * u128::from(r + 1) > u128::from(x));
        let d = sysctl::kernel_min_free_kbytes(x);
        assert!((sysctl::MIN_FREE_KBYTES_FLOOR..=sysctl::MIN_FREE_KBYTES_CEILING).contains(&d));
        let _ = sysctl::thp_recommended_min_free_kbytes(
            rng.number(),
            rng.number(),
            rng.number(),
            rng.number(),
        );
        let opt = |rng: &mut XorShift| (rng.below(4) != 0).then(|| rng.number());
        let small = |rng: &mut XorShift| (rng.below(4) != 0).then(|| rng.below(4) as i64 - 1);
        let s = HostSnapshot {
            panic_on_oom: small(&mut rng),
            oom_kill_allocating_task: small(&mut rng),
            oom_dump_tasks: small(&mut rng),
            overcommit_memory: small(&mut rng),
            min_free_kbytes: opt(&mut rng),
            min_free_default_kbytes: opt(&mut rng),
            min_free_thp_recommended_kbytes: opt(&mut rng),
            mem_total_bytes: opt(&mut rng),
            commit_limit_bytes: opt(&mut rng),
            committed_as_bytes: opt(&mut rng),
            ..HostSnapshot::default()
        };
        for w in s.warnings() {
            assert!(!w.message.contains('\n'));
        }
    }
}

#[test]
fn whole_collection_survives_random_files() {
    let files = [
        "proc/sys/vm/panic_on_oom",
        "proc/sys/vm/min_free_kbytes",
        "proc/zoneinfo",
        "proc/meminfo",
        "sys/devices/system/node/node0/meminfo",
        "proc/pressure/memory",
        "proc/vmstat",
        "sys/kernel/mm/transparent_hugepage/enabled",
        "sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
        "cg/memory.events",
    ];
    let mut rng = XorShift(0x1234_5678_9ABC_DEF1);
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, SAMPLES[i % SAMPLES.len()]).unwrap();
    }
    let host = HostCollectors::new(dir.path()).with_page_size(1 + rng.below(1 << 16) as u64);
    host.watch_memcg("cg".into(), "/cg".into());
    for round in 0..200 {
        for f in files {
            let p = dir.path().join(f);
            let old = std::fs::read_to_string(&p).unwrap_or_default();
            let new = if round % 3 == 0 {
                random_text(&mut rng, 200)
            } else {
                mutate(&mut rng, &old)
            };
            std::fs::write(p, new).unwrap();
        }
        let fams = host.collect();
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&fams, &mut out)
            .expect("families always encode");
        let _ = host.snapshot().warnings();
    }
}
