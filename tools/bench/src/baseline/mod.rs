//! The baseline: the same rows written and read by a plain client straight to
//! PostgreSQL, at the same concurrency, so that each Qupia figure can be given as a
//! ratio that compares across machines.

mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use store::BaselineStore;

use crate::driver::Workload;
use crate::people::{Picker, person};

/// One person per transaction, as one tokenize stores them.
#[derive(Debug)]
pub struct InsertOne {
    pub store: BaselineStore,
    pub next: Arc<AtomicU64>,
}

impl Workload for InsertOne {
    async fn once(&self) -> anyhow::Result<u64> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        self.store.insert_people(index..index + 1).await
    }
}

/// `batch` people per transaction, one multi-row insert per table.
#[derive(Debug)]
pub struct InsertBatch {
    pub store: BaselineStore,
    pub next: Arc<AtomicU64>,
    pub batch: u64,
}

impl Workload for InsertBatch {
    async fn once(&self) -> anyhow::Result<u64> {
        let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
        self.store.insert_people(first..first + self.batch).await
    }
}

/// Consent check, log entry and fetch of one consenting person's contacts.
#[derive(Debug)]
pub struct RevealOne {
    pub store: BaselineStore,
    pub picker: Picker,
}

impl Workload for RevealOne {
    async fn once(&self) -> anyhow::Result<u64> {
        let values = self.store.reveal(self.picker.consenting()).await?;
        anyhow::ensure!(values == 2, "{values} values came back where 2 were stored");
        Ok(1)
    }
}

/// [`RevealOne`] for `batch` distinct people in one statement.
#[derive(Debug)]
pub struct RevealBatch {
    pub store: BaselineStore,
    pub picker: Picker,
    pub batch: usize,
}

impl Workload for RevealBatch {
    async fn once(&self) -> anyhow::Result<u64> {
        let indices = self.picker.consenting_distinct(self.batch);
        let values = self.store.batch_reveal(&indices).await?;
        anyhow::ensure!(
            values == 2 * indices.len(),
            "{values} values came back where {} were stored",
            2 * indices.len()
        );
        Ok(indices.len() as u64)
    }
}

/// The indexed select of a stored person's e-mail.
#[derive(Debug)]
pub struct LookupEmail {
    pub store: BaselineStore,
    pub picker: Picker,
}

impl Workload for LookupEmail {
    async fn once(&self) -> anyhow::Result<u64> {
        let index = self.picker.stored();
        let found = self.store.lookup(&person(index).email).await?;
        anyhow::ensure!(
            found == [store::person_id(index)],
            "the lookup found {} people, not the one stored",
            found.len()
        );
        Ok(1)
    }
}
