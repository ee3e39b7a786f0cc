//! Build script: says at compile time which optional end-to-end tests are
//! required.
//!
//! The tests that drive the official Python SDKs (and the OpenAPI validator
//! from the same virtualenv) and the ones that drive a real browser need
//! tools `cargo` cannot install; the ones that fill a real disk mount a
//! small `tmpfs`, which needs root. A plain `cargo test` reports them as
//! ignored, with the reason and the way to run them; where their variable
//! is `1` (`.ci/run` sets both) they are ordinary tests, and a missing tool
//! fails them with the command that installs it. An `#[ignore]` has to be
//! decided when the test is compiled, hence the `cfg`s:
//!
//! | variable | cfg |
//! |---|---|
//! | `TRACEGATE_REQUIRE_SDK_TESTS=1` | `sdk_tests` |
//! | `TRACEGATE_REQUIRE_BROWSER_TESTS=1` | `browser_tests` |
//! | `TRACEGATE_REQUIRE_ROOT_TESTS=1` | `root_tests` |

const REQUIREMENTS: [(&str, &str); 3] = [
    ("TRACEGATE_REQUIRE_SDK_TESTS", "sdk_tests"),
    ("TRACEGATE_REQUIRE_BROWSER_TESTS", "browser_tests"),
    ("TRACEGATE_REQUIRE_ROOT_TESTS", "root_tests"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for (variable, cfg) in REQUIREMENTS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        if std::env::var(variable).is_ok_and(|value| value == "1") {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
