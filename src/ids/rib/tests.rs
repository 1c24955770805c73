//! kuid's IPAM acceptance table (reference/kuid.md §5) and the extra cases it suggests, then
//! properties of random claim sequences.

use super::*;

fn owner(name: &str) -> Owner {
    Owner { name: name.into(), uid: format!("uid-{name}") }
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// A RIB with the index's own prefixes (regular, as the index claims them).
fn index(prefixes: &[&str]) -> (Rib, RibJournal) {
    let mut rib = Rib::default();
    let mut j = RibJournal::default();
    for p in prefixes {
        let (a, l) = parse_cidr(p).unwrap();
        let name = format!("idx.{}", Net { start: a, len: l }.subnet_name());
        rib.claim_static_prefix(&mut j, &owner(&name), a, l, PrefixType::Regular, false, true, &none()).unwrap();
    }
    (rib, j)
}

fn prefix(rib: &mut Rib, j: &mut RibJournal, name: &str, p: &str, t: PrefixType) -> Result<IpGrant, RibError> {
    let (a, l) = parse_cidr(p).unwrap();
    rib.claim_static_prefix(j, &owner(name), a, l, t, false, false, &none())
}

fn address(rib: &mut Rib, j: &mut RibJournal, name: &str, p: &str) -> Result<IpGrant, RibError> {
    let (a, l) = parse_cidr(p).unwrap();
    rib.claim_static_address(j, &owner(name), a, l, false, &none())
}

fn dyn_addr(rib: &mut Rib, j: &mut RibJournal, name: &str, sel: &[(&str, &str)], prefer: Option<&str>) -> String {
    let sel: BTreeMap<String, String> = sel.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let prefer = prefer.map(|p| parse_cidr(p).unwrap());
    rib.claim_dynamic_address(j, &owner(name), &sel, prefer, &none()).unwrap().value
}

fn dyn_prefix(rib: &mut Rib, j: &mut RibJournal, name: &str, len: u8, t: PrefixType) -> Result<String, RibError> {
    rib.claim_dynamic_prefix(j, &owner(name), &none(), len + 96, t, None, &none()).map(|g| g.value)
}

const N: PrefixType = PrefixType::Network;
const R: PrefixType = PrefixType::Regular;

#[test]
fn static_prefixes_nest_as_kuid_allows() {
    let (mut rib, mut j) = index(&["172.0.0.0/8"]);
    let j = &mut j;
    // NoParents / NoParentIPv6: a static prefix needs no parent.
    assert_eq!(prefix(&mut rib, j, "a", "10.0.0.0/8", R).unwrap().value, "10.0.0.0/8");
    assert_eq!(prefix(&mut rib, j, "b", "2000::/48", R).unwrap().value, "2000::/48");
    // Nesting: regular in regular in regular.
    for (n, p) in [("n16", "172.0.0.0/16"), ("n24", "172.0.0.0/24"), ("n27", "172.0.0.0/27")] {
        prefix(&mut rib, j, n, p, R).unwrap();
    }
    let (mut rib, mut j) = index(&["172.0.0.0/8"]);
    let j = &mut j;
    // NestingNetwork: a network in a network is refused.
    prefix(&mut rib, j, "n16", "172.0.0.0/16", R).unwrap();
    prefix(&mut rib, j, "net", "172.0.0.0/24", N).unwrap();
    let err = prefix(&mut rib, j, "net2", "172.0.0.0/27", N).unwrap_err();
    assert!(matches!(err, RibError::Nesting { .. }), "{err}");
    // Other2Network: a regular prefix in a network is refused.
    let err = prefix(&mut rib, j, "reg", "172.0.0.0/27", R).unwrap_err();
    assert_eq!(err.to_string(), "172.0.0.0/27 cannot be a prefix inside 172.0.0.0/24, a network");
    // ParentIPv6.
    let (mut rib, mut j) = index(&["2000::/32"]);
    assert_eq!(prefix(&mut rib, &mut j, "v6", "2000::/48", R).unwrap().value, "2000::/48");
}

#[test]
fn static_addresses_follow_their_parent() {
    type Setup<'a> = &'a [(&'a str, &'a str, PrefixType)];
    let cases: &[(Setup, &str, Result<&str, &str>)] = &[
        // NoParent
        (&[], "172.0.0.0/32", Err("no prefix of the index holds 172.0.0.0/32")),
        // Address_PrefixParent
        (&[], "172.0.0.0/32", Ok("172.0.0.0/32")),
        // Address_NetworkParent_OwnerClash: the network's first address is its own.
        (&[("net", "172.0.0.0/24", N)], "172.0.0.0/32", Err("172.0.0.0/32 is already claimed by claim net")),
        // Address_NetworkParent: a host address in a network.
        (&[("net", "172.0.0.0/24", N)], "172.0.0.1/32", Err("cannot be a host address inside")),
        // Address_Parent / PrefixAddress_First_PoolParent
        (&[("reg", "172.0.0.0/24", R)], "172.0.0.0/32", Ok("172.0.0.0/32")),
        // PrefixAddress_PoolParent
        (&[("reg", "172.0.0.0/24", R)], "172.0.0.1/32", Ok("172.0.0.1/32")),
        // PrefixAddress_PrefixParent: an address with a length needs a network.
        (&[], "172.0.0.1/24", Err("cannot be a network address inside 172.0.0.0/8")),
        // PrefixAddress_NetworkParent
        (&[("net", "172.0.0.0/24", N)], "172.0.0.1/24", Ok("172.0.0.1/24")),
        // PrefixAddress_NetworkParentWithAddress
        (&[("net", "172.0.0.1/24", N)], "172.0.0.2/24", Ok("172.0.0.2/24")),
        // PrefixAddress_First_OtherParent
        (&[("reg", "172.0.0.0/24", R)], "172.0.0.1/24", Err("cannot be a network address inside 172.0.0.0/24")),
    ];
    for (i, (setup, claim, want)) in cases.iter().enumerate() {
        let (mut rib, mut j) = if i == 0 { index(&["10.0.0.0/8"]) } else { index(&["172.0.0.0/8"]) };
        for (n, p, t) in setup.iter() {
            prefix(&mut rib, &mut j, n, p, *t).unwrap();
        }
        let got = address(&mut rib, &mut j, "addr", claim);
        match (want, got) {
            (Ok(v), Ok(g)) => assert_eq!(&g.value, v, "case {i}"),
            (Err(m), Err(e)) => assert!(e.to_string().contains(m), "case {i}: {e}"),
            (w, g) => panic!("case {i}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn a_network_reports_its_gateway() {
    let (mut rib, mut j) = index(&["172.0.0.0/8"]);
    let (a, l) = parse_cidr("172.0.0.1/24").unwrap();
    let g = rib.claim_static_prefix(&mut j, &owner("net"), a, l, N, true, false, &none()).unwrap();
    assert_eq!(g, IpGrant { value: "172.0.0.1/24".into(), gateway: Some("172.0.0.1".into()) });
    let g = address(&mut rib, &mut j, "host", "172.0.0.2/24").unwrap();
    assert_eq!(g.gateway.as_deref(), Some("172.0.0.1"));
}

#[test]
fn ranges_hand_out_their_addresses() {
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    let j = &mut j;
    prefix(&mut rib, j, "p24", "10.0.0.0/24", R).unwrap();
    let (a, b) = parse_range("10.0.0.10-10.0.0.100").unwrap();
    let g = rib.claim_static_range(j, &owner("range1"), a, b, "10.0.0.10-10.0.0.100", &none()).unwrap();
    assert_eq!(g.value, "10.0.0.10-10.0.0.100");
    for (n, addr) in [("a10", "10.0.0.10/32"), ("a11", "10.0.0.11/32"), ("a100", "10.0.0.100/32")] {
        assert_eq!(address(&mut rib, j, n, addr).unwrap().value, addr);
    }
    // kuid lost 10.0.0.100 (its block is a /32 route): here it is in the table and taken.
    let err = address(&mut rib, j, "again", "10.0.0.100/32").unwrap_err();
    assert!(err.to_string().contains("already handed out in range range1 to claim a100"), "{err}");
    // FromRange: dynamic addresses come lowest-free from the table; a re-apply keeps its own.
    let mut rib2 = index(&["10.0.0.0/8"]).0;
    let j2 = &mut RibJournal::default();
    prefix(&mut rib2, j2, "p24", "10.0.0.0/24", R).unwrap();
    rib2.claim_static_range(j2, &owner("range1"), a, b, "r", &none()).unwrap();
    let sel = [("be.kuid.dev/claim-name", "range1")];
    assert_eq!(dyn_addr(&mut rib2, j2, "addrClaim1", &sel, None), "10.0.0.10/32");
    assert_eq!(dyn_addr(&mut rib2, j2, "addrClaim1", &sel, Some("10.0.0.10/32")), "10.0.0.10/32");
    assert_eq!(dyn_addr(&mut rib2, j2, "addrClaim2", &sel, None), "10.0.0.11/32");
    // A range must sit in one prefix and have no children.
    let (a, b) = parse_range("10.0.0.250-10.0.1.5").unwrap();
    let err = rib2.claim_static_range(j2, &owner("wide"), a, b, "wide", &none()).unwrap_err();
    assert!(matches!(err, RibError::RangeSpans { .. }), "{err}");
}

#[test]
fn dynamic_prefixes_and_addresses_come_by_best_fit() {
    // dynamic_prefix Normal
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    let got: Vec<String> = [R, R, N, N, R]
        .iter()
        .enumerate()
        .map(|(i, t)| dyn_prefix(&mut rib, &mut j, &format!("c{i}"), 24, *t).unwrap())
        .collect();
    assert_eq!(got, ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24", "10.0.4.0/24"]);
    // dynamic_prefix NoAvailable: the parent must be shorter than the claim.
    let (mut rib, mut j) = index(&["10.0.0.0/24"]);
    assert!(dyn_prefix(&mut rib, &mut j, "c", 24, R).is_err());
    // dynamic_address FromOther: no selector, the first prefix.
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    assert_eq!(dyn_addr(&mut rib, &mut j, "a", &[], None), "10.0.0.0/32");
    // dynamic_address FromNetwork: best fit around the network's first and last address.
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    prefix(&mut rib, &mut j, "network1", "10.0.0.0/24", N).unwrap();
    let sel = [("be.kuid.dev/claim-name", "network1")];
    let got: Vec<String> = (1..=5).map(|i| dyn_addr(&mut rib, &mut j, &format!("addrClaim{i}"), &sel, None)).collect();
    assert_eq!(got, ["10.0.0.1/24", "10.0.0.254/24", "10.0.0.2/24", "10.0.0.3/24", "10.0.0.252/24"]);
}

#[test]
fn extra_cases() {
    // An IPv6 /64 network: the first dynamic address is ::1 with the network's length.
    let (mut rib, mut j) = index(&["2001:db8::/32"]);
    prefix(&mut rib, &mut j, "net6", "2001:db8:0:1::/64", N).unwrap();
    let sel = [("be.kuid.dev/claim-name", "net6")];
    assert_eq!(dyn_addr(&mut rib, &mut j, "a", &sel, None), "2001:db8:0:1::1/64");
    // A /31 network has no first and last address to reserve.
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    prefix(&mut rib, &mut j, "p2p", "10.0.0.0/31", N).unwrap();
    let sel = [("be.kuid.dev/claim-name", "p2p")];
    assert_eq!(dyn_addr(&mut rib, &mut j, "a", &sel, None), "10.0.0.0/31");
    assert_eq!(dyn_addr(&mut rib, &mut j, "b", &sel, None), "10.0.0.1/31");
    // The interface example: a pool selected by address family, node after node, and a
    // restarted claim asking for its status address gets it back.
    let (mut rib, mut j) = index(&["10.0.0.0/24", "1000::/32"]);
    let v4 = [("ipam.be.kuid.dev/address-family", "ipv4")];
    assert_eq!(dyn_addr(&mut rib, &mut j, "node1.ipv4", &v4, None), "10.0.0.0/32");
    assert_eq!(dyn_addr(&mut rib, &mut j, "node2.ipv4", &v4, None), "10.0.0.1/32");
    assert_eq!(dyn_addr(&mut rib, &mut j, "node1.ipv4", &v4, Some("10.0.0.0/32")), "10.0.0.0/32");
    let v6 = [("ipam.be.kuid.dev/address-family", "ipv6")];
    assert_eq!(dyn_addr(&mut rib, &mut j, "node1.ipv6", &v6, None), "1000::/128");
    // Releasing a claim frees its address for the next one.
    rib.release(&mut j, &owner("node1.ipv4"));
    assert_eq!(dyn_addr(&mut rib, &mut j, "node3.ipv4", &v4, None), "10.0.0.0/32");
}

#[test]
fn releasing_a_prefix_takes_what_is_inside_and_names_the_owners() {
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    prefix(&mut rib, &mut j, "p24", "10.0.0.0/24", R).unwrap();
    address(&mut rib, &mut j, "host", "10.0.0.7/32").unwrap();
    assert_eq!(rib.release(&mut j, &owner("p24")), vec![owner("host")]);
    // The /8 has its whole space back.
    let (root, _) = rib.routes().iter().next().unwrap();
    assert_eq!(rib.space(root).unwrap().free(), 1 << 24);
}

#[test]
fn a_failed_claim_and_a_rollback_leave_the_rib_as_it_was() {
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    let start = j.len();
    prefix(&mut rib, &mut j, "net", "10.0.0.0/24", N).unwrap();
    let before = rib.clone();
    assert!(prefix(&mut rib, &mut j, "inner", "10.0.0.0/27", N).is_err());
    assert_eq!(rib, before);
    dyn_addr(&mut rib, &mut j, "a", &[("be.kuid.dev/claim-name", "net")], None);
    let (a, b) = parse_range("10.1.0.1-10.1.0.9").unwrap();
    rib.claim_static_range(&mut j, &owner("r"), a, b, "r", &none()).unwrap();
    dyn_addr(&mut rib, &mut j, "x", &[("be.kuid.dev/claim-name", "r")], None);
    rib.release(&mut j, &owner("net"));
    rib.rollback(&mut j, start);
    assert_eq!(rib, index(&["10.0.0.0/8"]).0);
}

#[test]
fn a_million_addresses_cost_what_the_first_did() {
    // Not a timing assertion: the free space stays a handful of runs however many addresses
    // are out, which is what keeps each claim cheap.
    let (mut rib, mut j) = index(&["10.0.0.0/8"]);
    for i in 0..20_000 {
        dyn_addr(&mut rib, &mut j, &format!("a{i}"), &[], None);
    }
    let (root, _) = rib.routes().iter().next().unwrap();
    let space = rib.space(root).unwrap();
    assert_eq!(space.free(), (1 << 24) - 20_000);
    assert_eq!(space.free_runs().count(), 1);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Prefix(u8, u8, u8, bool),
        Addr(u8, u8),
        DynAddr(u8, Option<u8>),
        DynPrefix(u8, u8),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..10, 0u8..16, 26u8..31, any::<bool>()).prop_map(|(o, a, l, n)| Op::Prefix(o, a, l, n)),
            (0u8..10, any::<u8>()).prop_map(|(o, a)| Op::Addr(o, a)),
            (0u8..10, proptest::option::of(0u8..10)).prop_map(|(o, s)| Op::DynAddr(o, s)),
            (0u8..10, 26u8..31).prop_map(|(o, l)| Op::DynPrefix(o, l)),
            (0u8..10).prop_map(Op::Release),
        ]
    }

    fn name(o: u8) -> Owner {
        Owner { name: format!("c{o}"), uid: format!("u{o}") }
    }

    /// Every route's space is its range minus the routes directly inside it; no two routes of
    /// different claims are the same prefix; every route lies in the index or in a route.
    fn check(rib: &Rib) -> Result<(), TestCaseError> {
        for net in rib.routes().keys() {
            if let Some(space) = rib.space(net) {
                let mut want = Space::new(net.start, net.end());
                for (c, _) in rib.inside(net) {
                    if want.is_free(c.start, c.end()) {
                        want.take(c.start, c.end()).unwrap();
                    }
                }
                prop_assert_eq!(space, &want, "space of {}", net.text());
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_claims_keep_the_rib_consistent(ops in proptest::collection::vec(op(), 1..40)) {
            let (mut rib, mut j) = index(&["10.0.0.0/24"]);
            let start = j.len();
            let base = V4_BASE | 0x0a00_0000;
            for op in ops {
                let before = rib.clone();
                let r = match op {
                    Op::Prefix(o, a, l, n) => {
                        let t = if n { N } else { R };
                        rib.claim_static_prefix(&mut j, &name(o), base + u128::from(a) * 16, l + 96, t, false, false, &none()).map(|_| ())
                    }
                    Op::Addr(o, a) => rib.claim_static_address(&mut j, &name(o), base + u128::from(a), 128, false, &none()).map(|_| ()),
                    Op::DynAddr(o, s) => {
                        let sel: BTreeMap<String, String> = s.map(|s| ("be.kuid.dev/claim-name".to_string(), format!("c{s}"))).into_iter().collect();
                        rib.claim_dynamic_address(&mut j, &name(o), &sel, None, &none()).map(|_| ())
                    }
                    Op::DynPrefix(o, l) => rib.claim_dynamic_prefix(&mut j, &name(o), &none(), l + 96, R, None, &none()).map(|_| ()),
                    Op::Release(o) => { rib.release(&mut j, &name(o)); Ok(()) }
                };
                if r.is_err() {
                    prop_assert_eq!(&rib, &before);
                }
                check(&rib)?;
            }
            rib.rollback(&mut j, start);
            prop_assert_eq!(rib, index(&["10.0.0.0/24"]).0);
        }
    }
}
