//! The tables printed after a run (Markdown, so they paste into the docs).

use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

use crate::check::{PollerState, Verdict};
use crate::faults::FaultKind;
use crate::history::{InstanceLog, Key, Tally};
use crate::measure::Figures;

/// One fault round.
pub struct Round {
    pub n: usize,
    pub fault: FaultKind,
    pub targets: Vec<u64>,
    pub figures: Figures,
    /// Of `figures.no_leader`, the part after the fault was undone (a node
    /// coming back with a higher term forces an election).
    pub no_leader_after_undo: Duration,
    /// What a hostile peer sent, and what became of it.
    pub forged: Option<std::sync::Arc<crate::hostile::Forged>>,
    /// The fault was injected.
    pub ran: bool,
    /// From undoing the fault to a healthy cluster; `None`: never healed.
    pub healed: Option<Duration>,
    /// Why the round did not run, or failed.
    pub note: Option<String>,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| d.as_millis().to_string())
}

pub fn rounds(rounds: &[Round]) -> String {
    let mut out = String::from(
        "| # | fault | node | no leader ms (after undo) | writes back ms | write p50 / max ms | failed writes | terms | healed after ms | note |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rounds {
        let f = &r.figures;
        let targets: Vec<String> = r.targets.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ({}) | {} | {} / {} | {} | {} | {} | {} |",
            r.n,
            r.fault.name(),
            targets.join(","),
            f.no_leader.as_millis(),
            r.no_leader_after_undo.as_millis(),
            ms(f.writes_back),
            ms(f.write_p50),
            ms(f.write_max),
            f.failed_writes,
            f.terms,
            ms(r.healed),
            r.note.as_deref().unwrap_or(""),
        );
    }
    out
}

/// Per fault kind: rounds, and the worst of each figure.
pub fn by_fault(rounds: &[Round]) -> String {
    let mut kinds: Vec<FaultKind> = Vec::new();
    for r in rounds {
        if !kinds.contains(&r.fault) {
            kinds.push(r.fault);
        }
    }
    let mut out = String::from(
        "| fault | rounds | no leader ms (max) | writes back ms (max) | healed after ms (max) |\n\
         |---|---|---|---|---|\n",
    );
    for kind in kinds {
        let of: Vec<&Round> = rounds.iter().filter(|r| r.fault == kind && r.ran).collect();
        let worst =
            |f: &dyn Fn(&Round) -> Option<Duration>| ms(of.iter().filter_map(|r| f(r)).max());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            kind.name(),
            of.len(),
            worst(&|r| Some(r.figures.no_leader)),
            worst(&|r| r.figures.writes_back),
            worst(&|r| r.healed),
        );
    }
    out
}

fn tally(of: impl Iterator<Item = Tally>) -> Tally {
    of.fold(Tally::default(), |a, t| Tally {
        acked: a.acked + t.acked,
        not_found: a.not_found + t.not_found,
        refused: a.refused + t.refused,
        maybe: a.maybe + t.maybe,
        first: None,
    })
}

/// What the workload did and what the checker found.
pub fn summary(
    history: &HashMap<Key, InstanceLog>,
    pollers: &[PollerState],
    verdict: &Verdict,
) -> String {
    let registers = tally(history.values().map(|l| l.registers.clone()));
    let cancels = tally(history.values().map(|l| l.cancels.clone()));
    let renews = tally(history.values().map(|l| l.renews.clone()));
    let changes: u64 = pollers.iter().map(|p| p.changes).sum();
    let mut out = String::from(
        "| | acknowledged | -404 | maybe (no sure answer) | refused |\n|---|---|---|---|---|\n",
    );
    for (name, t) in [
        ("registers", &registers),
        ("cancels", &cancels),
        ("renews", &renews),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            t.acked, t.not_found, t.maybe, t.refused
        );
    }
    let _ = writeln!(
        out,
        "\ninstances: {} (must be present {}, must be absent {}, either {}); poll answers seen: {changes}; violations: {}",
        history.len(),
        verdict.must_be_present,
        verdict.must_be_absent,
        verdict.either,
        verdict.violations.len()
    );
    out
}

/// The verdict in words, and the faults that went wrong.
pub fn violations(verdict: &Verdict, unhealed: usize, not_run: usize) -> String {
    let mut out = String::new();
    if unhealed > 0 {
        out.push_str(&format!(
            "\n**{unhealed} fault(s) after which the cluster did not heal.**\n"
        ));
    }
    if not_run > 0 {
        out.push_str(&format!(
            "\n**{not_run} fault(s) could not be injected (see the notes).**\n"
        ));
    }
    if verdict.violations.is_empty() {
        out.push_str("\nNo violations.\n");
    } else {
        out.push_str("\n**Violations:**\n\n");
        for v in verdict.violations.iter().take(50) {
            out.push_str(&format!("- {}: {}\n", v.kind, v.detail));
        }
        if verdict.violations.len() > 50 {
            out.push_str(&format!("- … and {} more\n", verdict.violations.len() - 50));
        }
    }
    out
}
