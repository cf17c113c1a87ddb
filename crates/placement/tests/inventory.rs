//! Inventory loading, validation errors that name the entry, and TOML round trips.

use placement::*;

const BASE: &str = r#"
[[domain]]
id = "z1"
level = "zone"

[[domain]]
id = "r1"
level = "rack"
parent = "z1"

[[domain]]
id = "j1"
level = "jbod"
parent = "r1"

[[bandwidth_domain]]
id = "tor1"
kind = "switch"
capacity = "12.5 GB/s"
load = "1 GB/s"

[[storage_group]]
id = "gold"
quota = "10 TB"

[[drive]]
id = "d1"
kind = "hdd"
capacity = "16 TB"
free = "12 TB"
rpm = 7200
tags = ["sas", "enc"]
transports = ["iscsi", "nvme-tcp"]
domain = "j1"
group = "gold"
bandwidth_domains = ["tor1"]

[[drive]]
id = "d2"
kind = "nvme"
capacity = 3840000000000
domain = "j1"
health = "degraded"

[[server]]
id = "s1"
domain = "r1"
bandwidth_domains = ["tor1"]
"#;

fn err(text: &str) -> String {
    Inventory::from_toml(text).unwrap_err().to_string()
}

#[test]
fn loads_and_resolves_hierarchy() {
    let inv = Inventory::from_toml(BASE).unwrap();
    let d1 = DriveId::new("d1").unwrap();
    assert_eq!(inv.levels(), ["zone", "rack", "jbod"]);
    assert_eq!(inv.drive_domain_at(&d1, "zone").unwrap().as_str(), "z1");
    assert_eq!(inv.drive_domain_at(&d1, "jbod").unwrap().as_str(), "j1");
    let d = inv.drive(&d1).unwrap();
    assert_eq!(d.capacity.0, 16_000_000_000_000);
    assert_eq!(d.free.0, 12_000_000_000_000);
    assert_eq!(d.transports, Transports::ISCSI | Transports::NVME_TCP);
    let d2 = inv.drive(&DriveId::new("d2").unwrap()).unwrap();
    assert_eq!(d2.free, d2.capacity, "free defaults to capacity");
    assert_eq!(
        d2.transports,
        Transports::all(),
        "transports default to all"
    );
    assert_eq!(d2.health, Health::Degraded);
    assert_eq!(inv.spec().bandwidth_domains[0].capacity.0, 12_500_000_000);
    let mut in_r1 = inv.drives_in("r1").unwrap();
    in_r1.sort();
    assert_eq!(in_r1, vec![d1.clone(), DriveId::new("d2").unwrap()]);
    assert_eq!(inv.drives_in("d1").unwrap(), vec![d1]);
    assert!(inv.drives_in("nope").is_none());
}

#[test]
fn toml_round_trip_is_lossless() {
    let inv = Inventory::from_toml(BASE).unwrap();
    let text = inv.to_toml();
    let again = Inventory::from_toml(&text).unwrap();
    assert_eq!(inv.spec(), again.spec());
}

#[test]
fn state_with_volumes_round_trips() {
    let mut engine = Engine::new(Inventory::from_toml(BASE).unwrap(), 1).unwrap();
    let req = Request::new(Shape::Single, 1_000_000_000);
    engine.place(VolumeId::new("v1").unwrap(), &req).unwrap();
    let saved = engine.snapshot().to_toml();
    let reloaded = Engine::new(Inventory::from_toml(&saved).unwrap(), 1).unwrap();
    assert_eq!(
        reloaded.volume(&VolumeId::new("v1").unwrap()),
        engine.volume(&VolumeId::new("v1").unwrap())
    );
    assert_eq!(
        reloaded.inventory().spec().drives,
        engine.inventory().spec().drives
    );
    // The stored volume can be repaired after the reload.
    let mut reloaded = reloaded;
    let plan = reloaded.plan_evacuation("d1").unwrap();
    assert_eq!(plan.moves.len() + plan.unplaceable.len(), 1);
}

/// `health` was read only in lowercase (serde's derive), while the composer reads its
/// inventory values in any case with blanks trimmed: `health = "Failed"` was refused.
#[test]
fn health_is_read_in_any_case() {
    for (text, want) in [
        ("Failed", Health::Failed),
        (" DRAINING ", Health::Draining),
        ("degraded", Health::Degraded),
        ("Healthy", Health::Healthy),
    ] {
        let inv = Inventory::from_toml(
            &BASE.replace("health = \"degraded\"", &format!("health = {text:?}")),
        )
        .unwrap();
        let d2 = inv.drive(&DriveId::new("d2").unwrap()).unwrap();
        assert_eq!(d2.health, want, "{text:?}");
    }
    let e = err(&BASE.replace("health = \"degraded\"", "health = \"sick\""));
    assert!(
        e.contains(
            "unknown health \"sick\", expected one of healthy, degraded, draining, failed (any case)"
        ),
        "{e}"
    );
    // Still written in lowercase.
    let inv = Inventory::from_toml(&BASE.replace("\"degraded\"", "\"Draining\"")).unwrap();
    assert!(inv.to_toml().contains("health = \"draining\""));
}

/// `kind` was read only in lowercase (serde's derive), unlike `health` and the composer's
/// inventory values: `kind = "NVMe"` was refused, in inventories, in requests' `kinds` and in
/// fleet-sim configurations alike. The same held for a constraint's `mode`.
#[test]
fn drive_kind_and_mode_are_read_in_any_case() {
    for (text, want) in [
        ("HDD", DriveKind::Hdd),
        (" NVMe ", DriveKind::Nvme),
        ("Ssd", DriveKind::Ssd),
    ] {
        let inv =
            Inventory::from_toml(&BASE.replacen("kind = \"hdd\"", &format!("kind = {text:?}"), 1))
                .unwrap();
        assert_eq!(
            inv.drive(&DriveId::new("d1").unwrap()).unwrap().kind,
            want,
            "{text:?}"
        );
        assert_eq!(text.parse::<DriveKind>(), Ok(want));
        // Still written in lowercase.
        assert!(inv.to_toml().contains(&format!("kind = \"{want}\"")));
        assert_eq!(want.to_string(), want.name());
    }
    let e = err(&BASE.replacen("kind = \"hdd\"", "kind = \"tape\"", 1));
    assert!(
        e.contains("unknown drive kind \"tape\", expected one of hdd, ssd, nvme (any case)"),
        "{e}"
    );

    let reqs = RequestFile::from_toml(
        r#"
        [[request]]
        name = "a"
        shape = { type = "mirror", legs = 2 }
        size = "1 GB"
        kinds = ["HDD", "Nvme"]
        separation = [{ level = "rack", mode = "Soft" }]
        bandwidth_spread = [{ kind = "port", mode = " HARD " }]
        "#,
    )
    .unwrap();
    let r = &reqs.requests[0];
    assert_eq!(r.kinds, [DriveKind::Hdd, DriveKind::Nvme]);
    assert_eq!(r.separation[0].mode, Mode::Soft);
    assert_eq!(r.bandwidth_spread[0].mode, Mode::Hard);
    let e = RequestFile::from_toml(
        "[[request]]\nname = \"a\"\nshape = { type = \"single\" }\nsize = 1\n\
         separation = [{ level = \"rack\", mode = \"maybe\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown mode \"maybe\", expected one of hard, soft (any case)"),
        "{e}"
    );
}

#[test]
fn duplicate_ids_are_named() {
    let text = format!("{BASE}\n[[drive]]\nid = \"d1\"\nkind = \"ssd\"\ncapacity = 5\n");
    assert_eq!(err(&text), "duplicate drive id 'd1'");
    let text = format!("{BASE}\n[[domain]]\nid = \"r1\"\nlevel = \"rack\"\n");
    assert_eq!(err(&text), "duplicate domain id 'r1'");
    let text = format!("{BASE}\n[[domain]]\nid = \"d2\"\nlevel = \"rack\"\n");
    assert!(err(&text).contains("drive 'd2': id also names a failure domain"));
}

#[test]
fn unknown_references_are_named() {
    let text = BASE.replace("parent = \"r1\"", "parent = \"r9\"");
    assert_eq!(
        err(&text),
        "domain 'j1': parent refers to unknown domain 'r9'"
    );
    let text = BASE.replace("group = \"gold\"", "group = \"silver\"");
    assert_eq!(
        err(&text),
        "drive 'd1': group refers to unknown storage_group 'silver'"
    );
    let text = BASE.replace(
        "bandwidth_domains = [\"tor1\"]\n\n[[drive]]",
        "bandwidth_domains = [\"tor9\"]\n\n[[drive]]",
    );
    assert_eq!(
        err(&text),
        "drive 'd1': bandwidth_domains refers to unknown bandwidth_domain 'tor9'"
    );
    let text = BASE.replace(
        "id = \"s1\"\ndomain = \"r1\"",
        "id = \"s1\"\ndomain = \"r7\"",
    );
    assert_eq!(
        err(&text),
        "server 's1': domain refers to unknown domain 'r7'"
    );
}

#[test]
fn cycles_are_reported_with_their_path() {
    let text = BASE.replace(
        "id = \"z1\"\nlevel = \"zone\"",
        "id = \"z1\"\nlevel = \"zone\"\nparent = \"j1\"",
    );
    let e = err(&text);
    assert!(e.starts_with("failure-domain cycle: "), "{e}");
    for d in ["z1", "r1", "j1"] {
        assert!(e.contains(d), "{e}");
    }
    let self_loop = BASE.replace(
        "id = \"z1\"\nlevel = \"zone\"",
        "id = \"z1\"\nlevel = \"zone\"\nparent = \"z1\"",
    );
    assert_eq!(err(&self_loop), "failure-domain cycle: z1 -> z1");
}

/// `load` and `used` include the listed volumes and the engine never charges past capacity or
/// quota, so an inventory that declares more is refused like `free` above `capacity` (it was
/// loaded, and the domain or group silently counted as overcommitted); the live additions
/// apply the same rule and change nothing when they refuse.
#[test]
fn load_above_capacity_and_used_above_quota_are_refused() {
    let text = BASE.replace("load = \"1 GB/s\"", "load = \"13 GB/s\"");
    assert_eq!(
        err(&text),
        "bandwidth_domain 'tor1': load (13000000000) exceeds capacity (12500000000); load may not exceed capacity"
    );
    let text = BASE.replace("quota = \"10 TB\"", "quota = \"10 TB\"\nused = \"11 TB\"");
    assert_eq!(
        err(&text),
        "storage_group 'gold': used (11000000000000) exceeds quota (10000000000000); used may not exceed quota"
    );
    // At the limit both are fine.
    let text = BASE
        .replace("load = \"1 GB/s\"", "load = \"12.5 GB/s\"")
        .replace("quota = \"10 TB\"", "quota = \"10 TB\"\nused = \"10 TB\"");
    Inventory::from_toml(&text).unwrap();

    let mut engine = Engine::new(Inventory::from_toml(BASE).unwrap(), 0).unwrap();
    let before = engine.snapshot().to_toml();
    let version = engine.version();
    let e = engine
        .add_bandwidth_domain(BwDomainSpec {
            id: BwDomainId::new("tor2").unwrap(),
            kind: "switch".into(),
            capacity: Bytes(10),
            load: Bytes(11),
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bandwidth_domain 'tor2': load (11) exceeds capacity (10)"),
        "{e}"
    );
    let e = engine
        .add_storage_group(GroupSpec {
            id: GroupId::new("silver").unwrap(),
            quota: Some(Bytes(0)),
            used: Bytes(1),
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("storage_group 'silver': used (1) exceeds quota (0)"),
        "{e}"
    );
    assert_eq!(engine.snapshot().to_toml(), before);
    assert_eq!(engine.version(), version);
}

#[test]
fn negative_and_inconsistent_sizes_are_named() {
    let text = BASE.replace("capacity = \"16 TB\"", "capacity = -5");
    assert_eq!(
        err(&text),
        "drive 'd1': capacity must not be negative (got -5)"
    );
    let text = BASE.replace("free = \"12 TB\"", "free = \"-1 TB\"");
    assert!(
        err(&text).starts_with("drive 'd1': free size"),
        "{}",
        err(&text)
    );
    let text = BASE.replace("free = \"12 TB\"", "free = \"17 TB\"");
    assert!(err(&text).contains("drive 'd1': free (17000000000000) exceeds capacity"));
    let text = BASE.replace("load = \"1 GB/s\"", "load = -3");
    assert_eq!(
        err(&text),
        "bandwidth_domain 'tor1': load must not be negative (got -3)"
    );
    let text = BASE.replace("quota = \"10 TB\"", "quota = \"ten\"");
    assert!(
        err(&text).starts_with("storage_group 'gold': quota"),
        "{}",
        err(&text)
    );
    let text = BASE.replace("rpm = 7200", "rpm = -7200");
    assert_eq!(
        err(&text),
        "drive 'd1': rpm must not be negative (got -7200)"
    );
    let text = BASE.replace("capacity = \"16 TB\"", "capacity = \"10 EiB\"");
    assert_eq!(
        err(&text),
        "drive 'd1': capacity must be at most 9223372036854775807 (the TOML integer range)"
    );
    let text = BASE.replace("capacity = 3840000000000", "capacity = 0");
    assert_eq!(err(&text), "drive 'd2': capacity must be positive");
}

#[test]
fn other_rules() {
    let text = BASE.replace("kind = \"hdd\"", "kind = \"tape\"");
    assert!(err(&text).starts_with("parse error"), "{}", err(&text));
    let text = BASE.replace("tags = [\"sas\", \"enc\"]", "tagz = []");
    assert!(err(&text).contains("tagz"), "{}", err(&text));
    let text =
        format!("{BASE}\n[[bandwidth_domain]]\nid = \"tor2\"\nkind = \"switch\"\ncapacity = 1\n")
            .replace(
                "bandwidth_domains = [\"tor1\"]\n\n[[drive]]",
                "bandwidth_domains = [\"tor1\", \"tor2\"]\n\n[[drive]]",
            );
    assert!(
        err(&text).contains("drive 'd1': bandwidth_domains lists two domains of kind 'switch'"),
        "{}",
        err(&text)
    );
    let text = BASE.replace("level = \"jbod\"", "level = \"zone\"");
    assert!(
        err(&text).contains("domain 'j1': parent chain holds two 'zone' domains"),
        "{}",
        err(&text)
    );
    let text = format!(
        "{BASE}\n[[volume]]\nid = \"v\"\nmembers = [\"d1\"]\nrequest = {{ shape = {{ type = \"mirror\", legs = 2 }}, size = 1 }}\n"
    );
    assert_eq!(
        err(&text),
        "volume 'v': members has 1 drives but the shape has 2 members"
    );
}

#[test]
fn volume_requests_are_checked_when_the_engine_loads_them() {
    let text = format!(
        "{BASE}\n[[volume]]\nid = \"v\"\nmembers = [\"d1\"]\nrequest = {{ shape = {{ type = \"single\" }}, size = 1, separation = [{{ level = \"row\" }}] }}\n"
    );
    let inv = Inventory::from_toml(&text).unwrap();
    let e = Engine::new(inv, 0).unwrap_err().to_string();
    assert!(
        e.contains("volume 'v'")
            && e.contains("request.separation[0].level")
            && e.contains("'row' is not a failure-domain level"),
        "{e}"
    );
}

#[test]
fn request_files_parse_and_reject_typos() {
    let f = RequestFile::from_toml(
        r#"
        [[request]]
        name = "db"
        shape = { type = "raid10", stripes = 4, mirrors = 2 }
        size = "200 GiB"
        separation = [{ level = "jbod" }, { level = "rack", mode = "soft" }]
        bandwidth = "500 MB/s"
        bandwidth_spread = [{ kind = "uplink", max_per_domain = 2 }]
        requisite = [{ zone = "z1" }]
        "#,
    )
    .unwrap();
    assert_eq!(f.requests[0].shape.member_count(), 8);
    assert_eq!(f.requests[0].size.0, 200 << 30);
    assert_eq!(f.requests[0].separation[1].mode, Mode::Soft);
    let e = RequestFile::from_toml(
        "[[request]]\nshape = { type = \"single\" }\nsize = 1\nseperation = []\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("seperation"), "{e}");
    let e = RequestFile::from_toml("[[request]]\nshape = { type = \"single\" }\nsize = -1\n")
        .unwrap_err();
    assert!(e.to_string().contains("negative"), "{e}");
}

/// A size of the wrong TOML type names the rule; it used to say only "data did not match any
/// variant of untagged enum RawSize".
#[test]
fn sizes_of_the_wrong_type_name_the_rule() {
    const RULE: &str =
        r#"expected a size: an integer number of bytes or a string with a unit ("500 GB", "10Gi")"#;
    for value in ["1.5", "true", "[1]"] {
        let e = RequestFile::from_toml(&format!(
            "[[request]]\nshape = {{ type = \"single\" }}\nsize = {value}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains(RULE), "{value}: {e}");
        let e = err(&BASE.replace("capacity = 3840000000000", &format!("capacity = {value}")));
        assert!(e.contains(RULE), "{value}: {e}");
    }
}

/// A parse error was toml's five-line message, repeating the offending line whole, and an
/// unknown transport was echoed whole too: a 100,000-character name made a 200 kB error. It is
/// one line naming the line and column, the name quoted short as every other rejected name is.
#[test]
fn a_long_unknown_transport_is_quoted_short() {
    let name = "t".repeat(100_000);
    let e = err(&BASE.replacen("\"iscsi\", \"nvme-tcp\"", &format!("{name:?}"), 1));
    assert_eq!(
        e,
        format!(
            "parse error: line 33, column 14: unknown transport {:?}… (100000 bytes) (expected iscsi, nvme-tcp, roce or nbd)",
            &name[..64]
        ),
    );
    let e = RequestFile::from_toml(&format!("[[request]]\nname = \"a\"\n{name} = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(e.len() < 700 && !e.contains('\n'), "{e:.700}");
    assert!(
        e.starts_with("parse error: line 3, column 1: unknown field `ttt"),
        "{e:.700}"
    );
    // A short message is not cut: the request's whole list of fields is named (it was cut
    // after 200 characters, before `attach_server`).
    let e = RequestFile::from_toml("[[request]]\nname = \"a\"\nbogus = 1\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("`preferred`, `pinned`, `exclude_drives`"),
        "{e}"
    );
}

/// A shape's `type` was read only in lowercase (serde's tagged enum) while every other name
/// in a request is read in any case; `{ type = "single", legs = 2 }` was read as a single drive,
/// the `legs` ignored without a word; and a negative count was "expected u32".
#[test]
fn shape_types_are_read_in_any_case_and_stray_fields_refused() {
    let shape = |text: &str| {
        RequestFile::from_toml(&format!(
            "[[request]]\nname = \"a\"\nshape = {text}\nsize = 1\n"
        ))
        .map(|f| f.requests[0].shape.clone())
        .map_err(|e| e.to_string())
    };
    assert_eq!(
        shape("{ type = \" Mirror \", legs = 2 }"),
        Ok(Shape::Mirror { legs: 2 })
    );
    assert_eq!(
        shape("{ type = \"RAID10\", stripes = 3, mirrors = 2 }"),
        Ok(Shape::Raid10 {
            stripes: 3,
            mirrors: 2
        })
    );
    assert_eq!(
        shape("{ type = \"Parity\", k = 4, m = 2 }"),
        Ok(Shape::Parity {
            k: 4,
            m: 2,
            sets: 1
        })
    );
    assert_eq!(shape("{ type = \"SLICE\" }"), Ok(Shape::Slice));
    for (text, want) in [
        (
            "{ type = \"single\", legs = 2 }",
            "unknown field `legs` (a single shape takes no other field than `type`)",
        ),
        (
            "{ type = \"mirror\", legs = 2, k = 1 }",
            "unknown field `k` (a mirror shape takes `legs`)",
        ),
        ("{ type = \"mirror\" }", "missing field `legs`"),
        (
            "{ type = \"raid6\" }",
            "unknown shape type \"raid6\", expected one of single, mirror, raid10, slice, parity (any case)",
        ),
        (
            "{ type = \"mirror\", legs = -2 }",
            "`legs` must be a whole number from 1 to 4294967295, got -2",
        ),
    ] {
        let e = shape(text).unwrap_err();
        assert!(e.ends_with(want), "{text}: {e}");
    }
    // Written as before: the type in lowercase, read back to the same shape.
    let file = RequestFile::from_toml(
        "[[request]]\nname = \"a\"\nshape = { type = \"Parity\", k = 4, m = 2 }\nsize = 1\n",
    )
    .unwrap();
    let text = toml::to_string(&file).unwrap();
    assert!(text.contains("type = \"parity\""), "{text}");
    let again = RequestFile::from_toml(&text).unwrap();
    assert_eq!(again.requests[0].shape, file.requests[0].shape);
}

/// A negative count or index in a request (`min_rpm = -5`, a pin's `member = -1`) was serde's
/// "invalid value: integer `-5`, expected u32", naming a Rust type; it states the range.
#[test]
fn counts_out_of_range_state_the_rule() {
    for (field, want) in [
        (
            "min_rpm = -5",
            "line 5, column 11: must be a whole number from 0 to 4294967295, got -5",
        ),
        (
            "pinned = [{ member = -1, drive = \"d1\" }]",
            &format!(
                "line 5, column 22: must be a whole number from 0 to {}, got -1",
                usize::MAX
            ),
        ),
    ] {
        let e = RequestFile::from_toml(&format!(
            "[[request]]\nname = \"a\"\nshape = {{ type = \"single\" }}\nsize = 1\n{field}\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(e, format!("parse error: {want}"), "{field}");
    }
}
