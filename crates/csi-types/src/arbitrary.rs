//! proptest strategies for the typed messages (feature `proptest`). Being written.
