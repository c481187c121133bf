//! `/proc/zoneinfo`: per-zone page counts and watermarks, the input of the kernel's own
//! `min_free_kbytes` default (see [`super::sysctl`]).
//!
//! ```text
//! Node 0, zone    DMA32
//!   pages free     772915
//!         min      5407
//!         low      6758
//!         high     8109
//!         spanned  1044480
//!         present  782336
//!         managed  772915
//!   pagesets
//!     cpu: 0
//!               count: 45
//!               high:  378
//! ```
//!
//! Only the two-token `key value` lines inside a zone are used; per-CPU `high:` lines (with a
//! colon) and everything else are ignored.

/// Zones kept at most; anything beyond is ignored (1024 nodes × 5 zones fit).
pub const MAX_ZONES: usize = 8192;

/// One zone's counts, in pages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Zone {
    pub node: u32,
    /// `DMA`, `DMA32`, `Normal`, `HighMem`, `Movable`, `Device`.
    pub name: String,
    pub min: Option<u64>,
    pub low: Option<u64>,
    pub high: Option<u64>,
    pub present: Option<u64>,
    pub managed: Option<u64>,
}

impl Zone {
    /// Whether `GFP_USER` allocations can use the zone: ZONE_DMA, ZONE_DMA32 and ZONE_NORMAL,
    /// the zones `nr_free_buffer_pages()` counts (`gfp_zone(GFP_USER)` is ZONE_NORMAL).
    pub fn is_lowmem(&self) -> bool {
        matches!(self.name.as_str(), "DMA" | "DMA32" | "Normal")
    }

    /// `populated_zone()`: the zone has present pages.
    pub fn is_populated(&self) -> bool {
        self.present.or(self.managed).unwrap_or(0) > 0
    }
}

/// Parses the zones of `/proc/zoneinfo`; never fails, unknown lines are ignored.
pub fn parse(text: &str) -> Vec<Zone> {
    let mut zones: Vec<Zone> = Vec::new();
    // Whether the lines being read belong to the last zone pushed.
    let mut in_zone = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("Node ") {
            in_zone = false;
            let Some((node, zone)) = rest.split_once(',') else {
                continue;
            };
            let (Ok(node), Some(name)) = (
                node.trim().parse::<u32>(),
                zone.trim().strip_prefix("zone").map(str::trim),
            ) else {
                continue;
            };
            if name.is_empty() || zones.len() >= MAX_ZONES {
                continue;
            }
            zones.push(Zone {
                node,
                name: name.to_owned(),
                ..Zone::default()
            });
            in_zone = true;
            continue;
        }
        if !in_zone {
            continue;
        }
        let mut tokens = trimmed.split_whitespace();
        let (Some(key), Some(value), None) = (tokens.next(), tokens.next(), tokens.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        let Some(zone) = zones.last_mut() else {
            continue;
        };
        let slot = match key {
            "min" => &mut zone.min,
            "low" => &mut zone.low,
            "high" => &mut zone.high,
            "present" => &mut zone.present,
            "managed" => &mut zone.managed,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value);
        }
    }
    zones
}

/// `nr_free_buffer_pages()` as the kernel computes it now: over the DMA/DMA32/Normal zones of
/// every node, the managed pages above the zone's high watermark. `None` if no such zone
/// reports `managed`.
pub fn lowmem_pages(zones: &[Zone]) -> Option<u64> {
    let mut seen = false;
    let mut sum = 0u64;
    for z in zones.iter().filter(|z| z.is_lowmem()) {
        if let Some(managed) = z.managed {
            seen = true;
            sum = sum.saturating_add(managed.saturating_sub(z.high.unwrap_or(0)));
        }
    }
    seen.then_some(sum)
}

/// Populated zones at or below ZONE_NORMAL, over all nodes: the `nr_zones` of khugepaged's
/// `set_recommended_min_free_kbytes()`.
pub fn populated_lowmem_zones(zones: &[Zone]) -> u64 {
    zones
        .iter()
        .filter(|z| z.is_lowmem() && z.is_populated())
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 1704
  pages free     3840
        boost    0
        min      26
        low      32
        high     38
        promo    44
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 3019, 9419, 9419, 9419)
      nr_free_pages 3840
  pagesets
    cpu: 0
              count: 45
              high:  378
              batch: 63
Node 0, zone   Normal
  pages free     1000
        min      11461
        low      14326
        high     17191
        present  5505024
        managed  1638400
Node 1, zone  Movable
        high     32
        present  0
        managed  0
";

    #[test]
    fn parses_zones_and_ignores_per_cpu_high() {
        let z = parse(SAMPLE);
        assert_eq!(z.len(), 3);
        assert_eq!(z[0].name, "DMA");
        assert_eq!(z[0].high, Some(38));
        assert_eq!(z[0].managed, Some(3840));
        assert_eq!(z[0].present, Some(3998));
        assert_eq!((z[1].node, z[1].name.as_str()), (0, "Normal"));
        assert_eq!((z[2].node, z[2].name.as_str()), (1, "Movable"));
        assert!(!z[2].is_lowmem());
        assert!(!z[2].is_populated());
    }

    #[test]
    fn lowmem_is_managed_above_high_of_dma_dma32_normal() {
        let z = parse(SAMPLE);
        assert_eq!(lowmem_pages(&z), Some((3840 - 38) + (1_638_400 - 17_191)));
        assert_eq!(populated_lowmem_zones(&z), 2);
        assert_eq!(lowmem_pages(&[]), None);
    }

    #[test]
    fn high_above_managed_counts_zero() {
        let z = parse("Node 0, zone DMA\n high 100\n managed 10\n");
        assert_eq!(lowmem_pages(&z), Some(0));
    }

    #[test]
    fn garbage_headers_are_skipped() {
        let z = parse("Node x, zone DMA\n managed 5\nNode 0 zone DMA\nNode 0, zone\n managed 7\n");
        assert!(z.is_empty());
    }
}
