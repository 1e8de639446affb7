//! The pipeline in force. A reload builds a whole new pipeline and swaps
//! it in here; each call takes the current one when it starts and keeps it
//! to its end, so calls under way finish as they began and no call ever
//! sees half of an old config and half of a new one.

use super::Pipeline;
use arc_swap::ArcSwap;
use std::sync::Arc;

#[derive(Debug)]
pub struct PipelineHandle {
    current: ArcSwap<Pipeline>,
}

impl PipelineHandle {
    pub fn new(pipeline: Pipeline) -> PipelineHandle {
        PipelineHandle {
            current: ArcSwap::from_pointee(pipeline),
        }
    }

    /// The pipeline new calls go through (two atomic operations, no lock).
    pub fn current(&self) -> Arc<Pipeline> {
        self.current.load_full()
    }

    /// New calls go through `pipeline` from now on.
    pub fn replace(&self, pipeline: Pipeline) {
        self.current.store(Arc::new(pipeline));
    }
}
