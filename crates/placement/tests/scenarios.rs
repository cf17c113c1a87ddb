//! Runs the named scenarios in `testdata/*.toml`: each file holds an `[inventory]` and a list
//! of `[[case]]`s, each with a request (or an evacuation/drain target) and its expected outcome.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use placement::*;
use toml::{Table, Value};

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn run_case(engine: &mut Engine, file: &str, case: &Table, index: usize) -> Result<(), String> {
    let name = case
        .get("name")
        .and_then(Value::as_str)
        .ok_or("case without a name")?;
    let ctx = |m: String| format!("{file} / {name}: {m}");
    let expect = case
        .get("expect")
        .and_then(Value::as_table)
        .ok_or_else(|| ctx("no expect table".into()))?;
    for key in ["evacuate", "drain"] {
        if let Some(target) = case.get(key).and_then(Value::as_str) {
            let plan = if key == "evacuate" {
                engine.plan_evacuation(target)
            } else {
                engine.plan_drain(target)
            }
            .map_err(|e| ctx(e.to_string()))?;
            let want: Vec<&Value> = expect
                .get("moves")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            if want.len() != plan.moves.len() {
                return Err(ctx(format!(
                    "expected {} moves, plan has {:?}",
                    want.len(),
                    plan.moves
                )));
            }
            for (w, mv) in want.iter().zip(&plan.moves) {
                let w = w.as_array().ok_or("move must be an array")?;
                let vol = w[0].as_str().unwrap_or_default();
                let member = w[1].as_integer().unwrap_or(-1) as usize;
                let allowed: Vec<&str> = w[2..].iter().filter_map(Value::as_str).collect();
                if mv.volume.as_str() != vol
                    || mv.member != member
                    || !allowed.contains(&mv.to.as_str())
                {
                    return Err(ctx(format!("move {mv:?} does not match {w:?}")));
                }
            }
            let unplaceable: BTreeSet<String> = plan
                .unplaceable
                .iter()
                .map(|u| u.volume.to_string())
                .collect();
            let want_un: BTreeSet<String> =
                strings(expect.get("unplaceable")).into_iter().collect();
            if unplaceable != want_un {
                return Err(ctx(format!(
                    "unplaceable {unplaceable:?}, expected {want_un:?}: {:?}",
                    plan.unplaceable
                )));
            }
            for v in strings(expect.get("untouched")) {
                if plan.moves.iter().any(|m| m.volume.as_str() == v) {
                    return Err(ctx(format!("volume {v} was touched")));
                }
            }
            return Ok(());
        }
    }
    let req: Request = case
        .get("request")
        .cloned()
        .ok_or_else(|| ctx("no request".into()))?
        .try_into()
        .map_err(|e: toml::de::Error| ctx(format!("bad request: {e}")))?;
    let commit = case.get("commit").and_then(Value::as_bool).unwrap_or(true);
    let before = engine.clone();
    let result = if commit {
        engine.place(VolumeId::new(format!("case{index}")).unwrap(), &req)
    } else {
        engine.plan(&req)
    };
    let outcome = expect
        .get("outcome")
        .and_then(Value::as_str)
        .unwrap_or("placed");
    match (outcome, result) {
        ("placed", Ok(p)) => {
            let inv = before.inventory();
            let drives: Vec<String> = p.members.iter().map(|m| m.drive.to_string()).collect();
            if let Some(n) = expect.get("soft_violations").and_then(Value::as_integer)
                && p.soft_violations.len() != n as usize
            {
                return Err(ctx(format!(
                    "expected {n} soft violations, got {:?}",
                    p.soft_violations
                )));
            }
            if expect.contains_key("drives") {
                let want: BTreeSet<String> = strings(expect.get("drives")).into_iter().collect();
                let got: BTreeSet<String> = drives.iter().cloned().collect();
                if want != got {
                    return Err(ctx(format!("placed on {got:?}, expected {want:?}")));
                }
            }
            if expect.contains_key("drives_subset_of") {
                let allowed = strings(expect.get("drives_subset_of"));
                if let Some(d) = drives.iter().find(|d| !allowed.contains(d)) {
                    return Err(ctx(format!(
                        "drive {d} not in {allowed:?} (placed on {drives:?})"
                    )));
                }
            }
            let (_, gs) = req.shape.groups();
            for level in strings(expect.get("distinct")) {
                for (g, chunk) in p.members.chunks(gs).enumerate() {
                    let doms: Vec<_> = chunk
                        .iter()
                        .filter_map(|m| inv.drive_domain_at(&m.drive, &level))
                        .collect();
                    let set: BTreeSet<_> = doms.iter().collect();
                    if set.len() != doms.len() {
                        return Err(ctx(format!("group {g} shares a {level}: {doms:?}")));
                    }
                }
            }
            if let Some(max) = expect
                .get("max_per_bandwidth_domain")
                .and_then(Value::as_integer)
            {
                let mut count: HashMap<String, i64> = HashMap::new();
                for m in &p.members {
                    for b in &inv.drive(&m.drive).unwrap().bandwidth_domains {
                        *count.entry(b.to_string()).or_default() += 1;
                    }
                }
                if count.values().any(|&c| c > max) {
                    return Err(ctx(format!(
                        "more than {max} members behind one bandwidth domain: {count:?}"
                    )));
                }
            }
            if expect.get("least_utilized").and_then(Value::as_bool) == Some(true) {
                for m in &p.members {
                    let rack = inv.drive_domain_at(&m.drive, "rack").unwrap();
                    let mine = before.utilization(&m.drive).unwrap();
                    for other in inv.drives_in(rack.as_str()).unwrap() {
                        if before.utilization(&other).unwrap() < mine {
                            return Err(ctx(format!(
                                "{} chosen although {other} in the same rack is emptier",
                                m.drive
                            )));
                        }
                    }
                }
            }
            Ok(())
        }
        ("unsatisfiable", Err(e @ PlacementError::Unsatisfiable(_))) => {
            let text = e.to_string();
            for want in strings(expect.get("explanation_contains")) {
                if !text.contains(&want) {
                    return Err(ctx(format!("explanation lacks {want:?}: {text}")));
                }
            }
            if engine.inventory().spec() != before.inventory().spec() {
                return Err(ctx("a failed placement changed the inventory".into()));
            }
            Ok(())
        }
        ("invalid", Err(e @ PlacementError::InvalidRequest { .. })) => {
            let text = e.to_string();
            for want in strings(expect.get("error_contains")) {
                if !text.contains(&want) {
                    return Err(ctx(format!("error lacks {want:?}: {text}")));
                }
            }
            Ok(())
        }
        (want, got) => Err(ctx(format!("expected {want}, got {got:?}"))),
    }
}

#[test]
fn testdata_scenarios() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut cases = 0;
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let doc: Table = text.parse().unwrap_or_else(|e| panic!("{file}: {e}"));
        let inv_text = toml::to_string(
            doc.get("inventory")
                .unwrap_or_else(|| panic!("{file}: no [inventory]")),
        )
        .unwrap();
        let inv = Inventory::from_toml(&inv_text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut engine = Engine::new(inv, 7).unwrap_or_else(|e| panic!("{file}: {e}"));
        for (i, case) in doc
            .get("case")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            cases += 1;
            if let Err(e) = run_case(&mut engine, &file, case.as_table().unwrap(), i) {
                failures.push(e);
            }
        }
    }
    assert!(cases >= 30, "only {cases} scenario cases found");
    assert!(
        failures.is_empty(),
        "{} of {cases} scenario cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
