//! The operations of libkv, by their function names.

/// The operations a store implements, by their function names (`pop_error`, which
/// reports the Puppet functions' soft failures, is none of a store's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Delete,
    Exists,
    List,
    Deletetree,
    AtomicCreate,
    AtomicGet,
    AtomicPut,
    AtomicDelete,
    AtomicList,
    EmptyValue,
    Info,
    Provider,
    Supports,
    Newlock,
    Unlock,
    WithLock,
    Watch,
    Watchtree,
}

impl Op {
    pub const ALL: &'static [Op] = &[
        Op::Get,
        Op::Put,
        Op::Delete,
        Op::Exists,
        Op::List,
        Op::Deletetree,
        Op::AtomicCreate,
        Op::AtomicGet,
        Op::AtomicPut,
        Op::AtomicDelete,
        Op::AtomicList,
        Op::EmptyValue,
        Op::Info,
        Op::Provider,
        Op::Supports,
        Op::Newlock,
        Op::Unlock,
        Op::WithLock,
        Op::Watch,
        Op::Watchtree,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
            Op::Exists => "exists",
            Op::List => "list",
            Op::Deletetree => "deletetree",
            Op::AtomicCreate => "atomic_create",
            Op::AtomicGet => "atomic_get",
            Op::AtomicPut => "atomic_put",
            Op::AtomicDelete => "atomic_delete",
            Op::AtomicList => "atomic_list",
            Op::EmptyValue => "empty_value",
            Op::Info => "info",
            Op::Provider => "provider",
            Op::Supports => "supports",
            Op::Newlock => "newlock",
            Op::Unlock => "unlock",
            Op::WithLock => "with_lock",
            Op::Watch => "watch",
            Op::Watchtree => "watchtree",
        }
    }

    /// The operation of a function name.
    pub fn named(name: &str) -> Option<Op> {
        Op::ALL.iter().copied().find(|op| op.name() == name)
    }

    /// What the operation takes beside its store, in the order bindings check it.
    pub fn arguments(self) -> Arguments {
        let (target, previous, value) = match self {
            Op::Get
            | Op::Delete
            | Op::Exists
            | Op::AtomicGet
            | Op::Newlock
            | Op::Unlock
            | Op::WithLock
            | Op::Watch => (Target::Key, false, false),
            Op::Put | Op::AtomicCreate => (Target::Key, false, true),
            Op::AtomicPut => (Target::Key, true, true),
            Op::AtomicDelete => (Target::Key, true, false),
            Op::List | Op::Deletetree | Op::AtomicList | Op::Watchtree => {
                (Target::Dir, false, false)
            }
            Op::EmptyValue | Op::Info | Op::Provider | Op::Supports => (Target::None, false, false),
        };
        Arguments {
            target,
            previous,
            value,
        }
    }

    /// Whether the operation takes a `ttl`.
    pub fn takes_ttl(self) -> bool {
        matches!(
            self,
            Op::Put | Op::AtomicCreate | Op::AtomicPut | Op::Newlock | Op::WithLock
        )
    }

    /// Whether the operation changes the store.
    pub fn writes(self) -> bool {
        matches!(
            self,
            Op::Put
                | Op::Delete
                | Op::Deletetree
                | Op::AtomicCreate
                | Op::AtomicPut
                | Op::AtomicDelete
                | Op::Newlock
                | Op::Unlock
                | Op::WithLock
        )
    }
}

/// What an operation takes: a key or a directory (or neither), then `previous`
/// (what `atomic_get` returned), then a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arguments {
    pub target: Target,
    pub previous: bool,
    pub value: bool,
}

/// Whether an operation is about a key, a directory, or the whole store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    None,
    Key,
    Dir,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_are_the_function_names() {
        let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), 20);
        assert!(names.contains(&"atomic_list"));
        // pop_error is a Puppet function about soft failures, not a store's operation.
        assert!(!names.contains(&"pop_error"));
    }
}
