//! The issue-5 fleet figures under `cargo bench`: failed allocations (overall and while a
//! fitting extent existed), both fragmentation figures, the share of live slices able to grow
//! 10% in place, resident memory and throughput, for slice-alloc and its peers on the same
//! input, under both best-fit device policies. It is the `fleet_report` example's report; see
//! that example for its options (`cargo bench -p slice-alloc --bench fleet -- --policy extent`).

#[path = "../examples/fleet_report.rs"]
mod fleet_report;

fn main() {
    fleet_report::main();
}
