//! The activation page in a real browser at a phone's size: headless
//! Chromium driven over WebDriver (chromedriver), Japanese first, as the
//! seed's users see it. The page must fit 360 CSS pixels without horizontal
//! scrolling, before and after the token is shown. Screenshots are kept in
//! target/screenshots/ for a person to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

mod browser_support;

use browser_support::Browser;
use e2e::{require_root_and_peers, TestEnv};

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn setup_page_fits_a_phone_in_japanese_and_english() {
    require_root_and_peers();
    let env = TestEnv::start();
    for (lang, user, expected_form, expected_token) in [
        ("ja", "hanako", "利用開始パスワード", "otpauth://"),
        ("en", "henry", "Activation password", "otpauth://"),
    ] {
        let issued = env.issue(user, &format!("{user}@example.jp"), "4321");
        let browser = Browser::start(lang);
        browser.open(&issued.setup_url);
        let form = browser.text();
        assert!(form.contains(expected_form), "{lang} form:\n{form}");
        let prefilled = browser.script(
            "return [document.querySelector('[name=service_id]').value, \
                     document.querySelector('[name=user_id]').value];",
        );
        let prefilled = prefilled.to_string().replace(['-', ' '], "");
        assert!(
            prefilled.contains("TESTSVC") && prefilled.contains(&issued.user_id),
            "{lang}: the link's IDs are not prefilled: {prefilled}"
        );
        browser.check_fits(&format!("setup-form-{lang}"));

        browser.script(
            "document.querySelector('[name=activation_password]').value = '4321';\
             document.querySelector('[name=activation_password]').form.submit();",
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let token_page = loop {
            let html = browser
                .script("return document.documentElement.outerHTML;")
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if html.contains(expected_token) {
                break html;
            }
            assert!(Instant::now() < deadline, "{lang}: no token page:\n{html}");
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(token_page.contains("<svg"), "{lang}: no inline QR code");
        assert!(token_page.contains("period=60"), "{lang}: otpauth link");
        browser.check_fits(&format!("setup-token-{lang}"));
        assert_eq!(env.show(user)["state"], "activated");
    }
}
