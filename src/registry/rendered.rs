//! The rendered fetch data of apps, kept for the next reader within a
//! budget of bytes shared by every app.
//!
//! Rendering an app's answer once for every poll it wakes, and for the
//! fetches after, is what keeps a wake cheap. Kept until the app next
//! changes, as it was, every app a consumer ever fetched held its answer:
//! consumers fetch every app, and a million instances rendered take as many
//! bytes again as the registry itself (390 MiB). Now an app holds a weak
//! handle on its answer, and the answers live in one queue per registry
//! within a budget of bytes (`poll.rendered_mb`): the oldest rendered goes
//! first. An answer needs to live
//! for the moments the polls it wakes read it; one pushed out is rendered
//! again when next asked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;

/// What the answers kept may take in all unless set otherwise.
pub const DEFAULT_BUDGET: usize = 32 << 20;

/// Answers kept, oldest first, within a budget of bytes: one for a
/// registry, shared by its apps.
#[derive(Debug)]
pub struct Answers {
    budget: AtomicUsize,
    kept: Mutex<Kept>,
}

#[derive(Debug)]
struct Kept {
    answers: VecDeque<Arc<Bytes>>,
    bytes: usize,
}

impl Default for Answers {
    fn default() -> Self {
        Answers::new(DEFAULT_BUDGET)
    }
}

impl Answers {
    pub const fn new(budget: usize) -> Self {
        Answers {
            budget: AtomicUsize::new(budget),
            kept: Mutex::new(Kept {
                answers: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// Sets what the answers kept may take in all (a node setting); what
    /// is kept over it goes as the next answer is kept.
    pub fn set_budget(&self, bytes: usize) {
        self.budget.store(bytes, Ordering::Relaxed);
    }

    /// The bytes the answers kept take now, and the most they may.
    pub fn kept(&self) -> (usize, usize) {
        (self.kept.lock().bytes, self.budget.load(Ordering::Relaxed))
    }

    /// Keeps `answer` within the budget, pushing out the oldest kept.
    fn keep(&self, answer: Bytes) -> Weak<Bytes> {
        let size = answer.len();
        let budget = self.budget.load(Ordering::Relaxed);
        // Checked first: an answer that could never fit pushes none out.
        if size > budget {
            return Weak::new();
        }
        let mut kept = self.kept.lock();
        while kept.bytes + size > budget {
            match kept.answers.pop_front() {
                Some(old) => kept.bytes -= old.len(),
                None => break,
            }
        }
        let answer = Arc::new(answer);
        let weak = Arc::downgrade(&answer);
        kept.bytes += size;
        kept.answers.push_back(answer);
        weak
    }
}

/// One app's answer for one status mask, if it is still kept.
#[derive(Debug, Default)]
pub struct Slot(Mutex<Weak<Bytes>>);

impl Clone for Slot {
    fn clone(&self) -> Self {
        Slot(Mutex::new(self.0.lock().clone()))
    }
}

impl Slot {
    /// The answer kept, or `render`'s, kept from now on among `answers`.
    /// Readers of one slot at once wait for one render (as the polls one
    /// change wakes do).
    pub fn get_or_render(&self, answers: &Answers, render: impl FnOnce() -> Bytes) -> Bytes {
        let mut slot = self.0.lock();
        if let Some(kept) = slot.upgrade() {
            return Bytes::clone(&kept);
        }
        let answer = render();
        *slot = answers.keep(answer.clone());
        answer
    }

    /// Forgets the answer (the app changed); its bytes leave the budget as
    /// newer answers push it out.
    pub fn clear(&mut self) {
        *self.0.get_mut() = Weak::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_kept_within_the_budget_oldest_out_first() {
        let answers = Answers::new(1000);
        let bytes = || answers.kept.lock().bytes;
        let slots: Vec<Slot> = (0..4).map(|_| Slot::default()).collect();
        let renders = AtomicUsize::new(0);
        let render = |n: u8| {
            renders.fetch_add(1, Ordering::Relaxed);
            Bytes::from(vec![n; 400])
        };
        for (n, slot) in slots.iter().enumerate() {
            let got = slot.get_or_render(&answers, || render(n as u8));
            assert_eq!(got[0], n as u8);
        }
        assert_eq!(bytes(), 800);
        // The last two are kept, the first two were pushed out.
        for (n, slot) in slots.iter().enumerate().skip(2) {
            slot.get_or_render(&answers, || panic!("slot {n} was kept"));
        }
        assert_eq!(slots[0].get_or_render(&answers, || render(9))[0], 9);
        assert_eq!(renders.load(Ordering::Relaxed), 5);

        // An answer larger than the budget is answered, never kept.
        let big = Slot::default();
        let got = big.get_or_render(&answers, || Bytes::from(vec![1; 2000]));
        assert_eq!(got.len(), 2000);
        assert!(bytes() <= 1000);
        // ... and pushes out none of those kept.
        slots[3].get_or_render(&answers, || panic!("slot 3 was pushed out"));
        let again = big.get_or_render(&answers, || Bytes::from_static(b"again"));
        assert_eq!(again, "again");

        // A cleared slot renders again; a clone shares what is kept.
        let mut slot = Slot::default();
        slot.get_or_render(&answers, || Bytes::from_static(b"one"));
        let copy = slot.clone();
        copy.get_or_render(&answers, || panic!("the clone shares the answer"));
        slot.clear();
        let two = slot.get_or_render(&answers, || Bytes::from_static(b"two"));
        assert_eq!(two, "two");
        assert!(bytes() <= 1000);
    }
}
