//! A value a reload replaces whole while readers keep the one they took:
//! settings, limits. Readers clone an `Arc` (no lock held across work); a
//! poisoned lock is still read, so a panic elsewhere cannot stop the hub.

use std::sync::{Arc, RwLock};

pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: T) -> Self {
        Swap(RwLock::new(Arc::new(value)))
    }

    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
    }
}
