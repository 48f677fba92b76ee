//! The final check: the invariants still hold after the load. A sample of the people
//! stored during the run is revealed and compared with what was sent, and the whole
//! access log is verified and must hold at least one entry for every operation the
//! vault acknowledged.

use std::sync::Mutex;

use rand::Rng;

use crate::qupia::Qupia;

/// A uniform sample of the people tokenized during the timed runs (reservoir
/// sampling: every one has the same chance, however many there were).
#[derive(Debug)]
pub struct CheckSample {
    capacity: usize,
    state: Mutex<Reservoir>,
}

#[derive(Debug, Default)]
struct Reservoir {
    seen: u64,
    people: Vec<(u64, String)>,
}

impl CheckSample {
    pub fn new(capacity: usize) -> CheckSample {
        CheckSample { capacity, state: Mutex::new(Reservoir::default()) }
    }

    /// Offers person `index`, stored under `token`, to the sample.
    pub fn offer(&self, index: u64, token: String) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.seen += 1;
        if state.people.len() < self.capacity {
            state.people.push((index, token));
        } else {
            let slot = rand::thread_rng().gen_range(0..state.seen);
            if let Some(kept) = usize::try_from(slot).ok().and_then(|slot| state.people.get_mut(slot)) {
                *kept = (index, token);
            }
        }
    }

    pub fn people(&self) -> Vec<(u64, String)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).people.clone()
    }
}

/// What the final check found.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FinalCheck {
    /// People revealed (every stored field, purpose service_delivery).
    pub revealed: usize,
    /// Of those, people whose every value equals what was sent.
    pub matched: usize,
    /// The first difference or failure, naming fields, never values.
    pub first_problem: Option<String>,
    pub audit_intact: bool,
    pub audit_entries: i64,
    /// The verifier's sentence when the log is broken.
    pub audit_problem: String,
    /// Entries the vault acknowledged writing (people stored, tokens revealed, lookups).
    pub acknowledged_entries: u64,
    /// Qupia requests that failed during the run, warm-ups included.
    pub failed_requests: u64,
}

impl FinalCheck {
    pub fn passed(&self) -> bool {
        self.revealed > 0
            && self.matched == self.revealed
            && self.audit_intact
            && u64::try_from(self.audit_entries).unwrap_or(0) >= self.acknowledged_entries
            && self.failed_requests == 0
    }
}

/// Reveals `people` and compares, then verifies the access log.
pub async fn run(qupia: &Qupia, people: &[(u64, String)], failed_requests: u64) -> anyhow::Result<FinalCheck> {
    let mut check = FinalCheck { failed_requests, ..FinalCheck::default() };
    for (index, token) in people {
        check.revealed += 1;
        match qupia.reveal_all(*index, token).await {
            Ok(()) => check.matched += 1,
            Err(err) => {
                check.first_problem.get_or_insert_with(|| format!("{err:#}"));
            }
        }
    }
    // After the reveals, so that their entries are in the count too.
    let verified = qupia.verify_audit().await?;
    check.audit_intact = verified.intact;
    check.audit_entries = verified.entries;
    check.audit_problem = verified.problem;
    check.acknowledged_entries = qupia.logged.load(std::sync::atomic::Ordering::Relaxed);
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> FinalCheck {
        FinalCheck {
            revealed: 10,
            matched: 10,
            first_problem: None,
            audit_intact: true,
            audit_entries: 500,
            audit_problem: String::new(),
            acknowledged_entries: 500,
            failed_requests: 0,
        }
    }

    #[test]
    fn any_broken_invariant_fails_the_check() {
        assert!(passing().passed());
        assert!(!FinalCheck { matched: 9, ..passing() }.passed(), "a revealed value differed");
        assert!(!FinalCheck { audit_intact: false, ..passing() }.passed(), "the access log is broken");
        assert!(!FinalCheck { audit_entries: 499, ..passing() }.passed(), "an acknowledged entry is missing");
        assert!(!FinalCheck { failed_requests: 1, ..passing() }.passed(), "a request failed under load");
        assert!(!FinalCheck { revealed: 0, matched: 0, ..passing() }.passed(), "nothing was checked");
    }

    #[test]
    fn the_sample_keeps_at_most_its_capacity_of_people_offered() {
        let sample = CheckSample::new(5);
        for index in 0..1000 {
            sample.offer(index, format!("token-{index}"));
        }
        let people = sample.people();
        assert_eq!(people.len(), 5);
        for (index, token) in people {
            assert!(index < 1000);
            assert_eq!(token, format!("token-{index}"), "a kept person keeps their own token");
        }
    }
}
