//! Helpers of the tests that run storage on real files: a glommio executor with a
//! temporary directory, and a small seeded generator so a failing seed replays.

use std::future::Future;
use std::path::PathBuf;

use glommio::{LocalExecutorBuilder, Placement};

/// Runs `test` on a fresh glommio executor with a temporary directory (I/O warmed up);
/// removes the directory afterwards.
pub fn run_in_tempdir<F, Fut>(test: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(512 * 1024)
        .spawn(move || async move {
            super::warm_up_io(&path).await.unwrap();
            test(path).await;
        })
        .unwrap()
        .join()
        .unwrap();
    drop(dir);
}

/// [`run_in_tempdir`] with a partition directory (`t-0`) in it.
pub fn run_in_partition_dir<F, Fut>(test: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    run_in_tempdir(|root| async move {
        let dir = root.join("t-0");
        std::fs::create_dir_all(&dir).unwrap();
        test(dir).await;
    })
}

/// A small deterministic generator (SplitMix64), so a failing seed can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
