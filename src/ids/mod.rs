//! Identifier allocation for `-r` (kuid's backends: IPAM, VLAN, AS, GENID, EXTCOMM): the free
//! space of a pool and the allocation rules of each backend, as pure data structures that a
//! store transaction drives.
//!
//! `space` is the free-space structure every pool is built from (free runs plus a best-fit
//! index of aligned blocks); `pool` is a pool of plain ids (VLAN, AS, GENID, EXTCOMM) with
//! kuid's static, dynamic and range claims, every change journaled so a transaction can roll it
//! back; `rib` is an IPAM index: a routing table of IPv4 and IPv6 prefixes, addresses and range
//! blocks with the free space inside each prefix, kuid's nesting rules and network expansion.
//!
//! Architecture invariant: no I/O, no threads, no sled, no objects: the store persists and
//! publishes what these structures decide, and the API glue turns claims into calls.

pub(crate) mod pool;
pub(crate) mod rib;
pub(crate) mod space;
