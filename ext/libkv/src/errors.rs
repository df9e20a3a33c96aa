//! Core errors become the Ruby exceptions declared in `lib/libkv/errors.rb`.

use libkv_core::Error as CoreError;
use magnus::prelude::*;
use magnus::value::Lazy;
use magnus::{ExceptionClass, Module, RModule, Ruby};

fn lookup(ruby: &Ruby, name: &str) -> ExceptionClass {
    let libkv: RModule = ruby
        .class_object()
        .const_get("LibKV")
        .expect("LibKV is defined before the extension's classes are used");
    libkv
        .const_get(name)
        .unwrap_or_else(|_| panic!("LibKV::{name} is declared in libkv/errors.rb"))
}

macro_rules! exception_classes {
    ($($static:ident => $name:literal),* $(,)?) => {
        $(static $static: Lazy<ExceptionClass> = Lazy::new(|ruby| lookup(ruby, $name));)*
        /// Resolves every class once at load time, so a missing one fails loudly then.
        pub fn init(ruby: &Ruby) {
            $(let _ = ruby.get_inner(&$static);)*
        }
    };
}

exception_classes! {
    INVALID_ARGUMENT => "InvalidArgumentError",
    INVALID_KEY => "InvalidKeyError",
    UNSUPPORTED => "UnsupportedError",
    STORE => "StoreError",
    CONFLICT => "ConflictError",
    CONNECTION => "ConnectionError",
    TIMEOUT => "TimeoutError",
    AUTH => "AuthError",
    CLOSED => "ClosedError",
}

/// `LibKV::ClosedError` for a call on a store object that was closed.
pub fn closed(ruby: &Ruby, url: &str) -> magnus::Error {
    magnus::Error::new(
        ruby.get_inner(&CLOSED),
        format!(
            "the store object for {url} is closed (Store#close); open it again with LibKV.open"
        ),
    )
}

/// The Ruby exception for a core error; the message is the core's, which never
/// holds a secret. The key the error is about, if any, is its `key` attribute.
pub fn to_ruby(ruby: &Ruby, e: CoreError) -> magnus::Error {
    let class = match &e {
        CoreError::InvalidKey { .. } => &INVALID_KEY,
        CoreError::InvalidUrl { .. }
        | CoreError::InvalidValue { .. }
        | CoreError::InvalidPrevious { .. }
        | CoreError::InvalidArgument(_) => &INVALID_ARGUMENT,
        CoreError::Unsupported { .. } => &UNSUPPORTED,
        CoreError::Conflict { .. } => &CONFLICT,
        CoreError::Store { .. } => &STORE,
        CoreError::Connection { .. } => &CONNECTION,
        CoreError::Timeout { .. } => &TIMEOUT,
        CoreError::Auth { .. } => &AUTH,
    };
    let class = ruby.get_inner(class);
    let message = e.to_string();
    let exception = match class.new_instance((message.as_str(),)) {
        Ok(exception) => exception,
        Err(err) => return err,
    };
    if let Some(key) = e.key() {
        if let Err(err) =
            exception.funcall::<_, _, magnus::Value>("instance_variable_set", ("@key", key))
        {
            return err;
        }
    }
    exception.into()
}
