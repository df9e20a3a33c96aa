//! Core errors become the Ruby exceptions declared in `lib/libkv/errors.rb`, by the
//! class name the core gives each (`libkv_core::ErrorClass`).

use libkv_core::{Error as CoreError, ErrorClass};
use magnus::prelude::*;
use magnus::value::Lazy;
use magnus::{ExceptionClass, Module, RModule, Ruby};

/// `LibKV::<name>`, which `libkv/errors.rb` declares.
fn lookup(ruby: &Ruby, name: &str) -> ExceptionClass {
    let libkv: RModule = ruby
        .class_object()
        .const_get("LibKV")
        .expect("LibKV is defined before the extension's classes are used");
    libkv
        .const_get(name)
        .unwrap_or_else(|_| panic!("LibKV::{name} is declared in libkv/errors.rb"))
}

macro_rules! classes {
    ($($i:literal),*) => {
        [$(Lazy::new(|ruby| lookup(ruby, ErrorClass::ALL[$i].name()))),*]
    };
}

/// Each class, looked up once, in the order of `ErrorClass::ALL`.
static CLASSES: [Lazy<ExceptionClass>; 12] = classes!(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);

/// Resolves every class at load time, so a missing one fails loudly then.
pub fn init(ruby: &Ruby) {
    assert_eq!(CLASSES.len(), ErrorClass::ALL.len());
    for class in &CLASSES {
        let _ = ruby.get_inner(class);
    }
}

fn class_of(ruby: &Ruby, class: ErrorClass) -> ExceptionClass {
    let index = ErrorClass::ALL
        .iter()
        .position(|c| *c == class)
        .expect("every class is in ErrorClass::ALL");
    ruby.get_inner(&CLASSES[index])
}

/// The Ruby exception for a core error; the message is the core's, which never
/// holds a secret. The key the error is about, if any, is its `key` attribute.
pub fn to_ruby(ruby: &Ruby, e: CoreError) -> magnus::Error {
    let class = class_of(ruby, e.class());
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
