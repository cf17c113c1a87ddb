//! Macros shared by the per-service message modules.

/// Conversions for messages with no fields.
macro_rules! empty_messages {
    ($($typed:ty => $wire:ty),* $(,)?) => {
        $(
            impl TryFrom<$wire> for $typed {
                type Error = $crate::CsiError;
                fn try_from(_: $wire) -> Result<Self, $crate::CsiError> {
                    Ok(Self::default())
                }
            }

            impl From<$typed> for $wire {
                fn from(_: $typed) -> Self {
                    Self::default()
                }
            }
        )*
    };
}
pub(crate) use empty_messages;
