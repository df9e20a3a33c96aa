//! Runs Rust code with Ruby's global VM lock released, so other Ruby threads run
//! while a store waits on disk or network.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::null_mut;

/// Calls `f` without the GVL. `f` must not touch any Ruby object. A panic inside is
/// caught there (unwinding through Ruby's C frames is undefined) and resumed once the
/// GVL is held again, where magnus turns it into a Ruby exception.
pub fn nogvl<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    struct Call<F, R> {
        f: Option<F>,
        result: Option<std::thread::Result<R>>,
    }

    unsafe extern "C" fn trampoline<F, R>(data: *mut c_void) -> *mut c_void
    where
        F: FnOnce() -> R,
    {
        // SAFETY: `data` is the `Call` below, alive and unaliased for this call.
        let call = unsafe { &mut *(data as *mut Call<F, R>) };
        if let Some(f) = call.f.take() {
            call.result = Some(panic::catch_unwind(AssertUnwindSafe(f)));
        }
        null_mut()
    }

    let mut call = Call {
        f: Some(f),
        result: None,
    };
    // SAFETY: the trampoline only touches `call`, which outlives the call.
    unsafe {
        rb_sys::rb_thread_call_without_gvl(
            Some(trampoline::<F, R>),
            &mut call as *mut Call<F, R> as *mut c_void,
            None,
            null_mut(),
        );
    }
    match call.result {
        Some(Ok(value)) => value,
        Some(Err(payload)) => panic::resume_unwind(payload),
        None => unreachable!("rb_thread_call_without_gvl returned without calling"),
    }
}
