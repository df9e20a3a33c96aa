//! `LibKV::Lock`: a lock this process holds (`libkv_core::Lock`), renewed in the
//! background by the core while it is held; `lib/libkv/lock.rb` adds the rest.

use std::sync::Mutex;

use libkv_core::Lock;
use magnus::prelude::*;
use magnus::{method, Error, RModule, Ruby};

use crate::errors;
use crate::nogvl::nogvl;

#[magnus::wrap(class = "LibKV::Lock", free_immediately, size)]
pub struct RbLock(Mutex<Option<Lock>>);

pub fn init(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let class = module.define_class("Lock", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("key", method!(RbLock::key, 0))?;
    class.define_method("owner", method!(RbLock::owner, 0))?;
    class.define_method("fence", method!(RbLock::fence, 0))?;
    class.define_method("ttl", method!(RbLock::ttl, 0))?;
    class.define_method("held?", method!(RbLock::held, 0))?;
    class.define_method("lost", method!(RbLock::lost, 0))?;
    class.define_method("unlock", method!(RbLock::unlock, 0))?;
    class.define_method("detach", method!(RbLock::detach, 0))?;
    Ok(())
}

impl RbLock {
    pub fn new(lock: Lock) -> RbLock {
        RbLock(Mutex::new(Some(lock)))
    }

    fn with<T>(&self, f: impl FnOnce(&Lock) -> T) -> T {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(guard
            .as_ref()
            .expect("a lock is only taken out when dropped"))
    }

    fn key(&self) -> String {
        self.with(|l| l.key().to_string())
    }

    fn owner(&self) -> String {
        self.with(|l| l.owner().to_owned())
    }

    fn fence(&self) -> u64 {
        self.with(Lock::fence)
    }

    fn ttl(&self) -> u64 {
        self.with(|l| l.ttl().as_secs())
    }

    fn held(&self) -> bool {
        self.with(Lock::held)
    }

    /// Why the lock was lost, or nil.
    fn lost(&self) -> Option<String> {
        self.with(Lock::lost)
    }

    /// Releases the lock (without the GVL); raises `LibKV::LockLostError` when it
    /// had been lost. Releasing twice does nothing.
    fn unlock(ruby: &Ruby, rb_self: &Self) -> Result<bool, Error> {
        rb_self
            .with(|l| nogvl(|| l.unlock()))
            .map(|()| true)
            .map_err(|e| errors::to_ruby(ruby, e))
    }

    /// Stops renewing and leaves the lock held on the store until its ttl passes.
    fn detach(&self) -> bool {
        self.with(|l| nogvl(|| l.detach()));
        true
    }
}

impl Drop for RbLock {
    /// A lock the garbage collector drops is let go on a thread of its own: the
    /// collector must not wait on the store (releasing a held lock, or a renewal
    /// of a lock being lost).
    fn drop(&mut self) {
        let lock = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(lock) = lock {
            let _ = std::thread::Builder::new()
                .name("libkv-unlock".into())
                .spawn(move || drop(lock));
        }
    }
}
