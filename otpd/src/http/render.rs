//! The activation pages, in Japanese and English. Plain
//! HTML with inline CSS: no scripts, no external assets, readable on a
//! 360-pixel-wide phone. Every value that comes from outside is escaped.

use std::fmt::Write;

use otpcore::config::Language;
use otpcore::enrol::State;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};
use zeroize::Zeroizing;

/// What every page needs: the language, the issuer shown in the header,
/// and the path prefix of `public_url` (empty at the root) for form actions.
pub struct Ctx<'a> {
    pub lang: Language,
    pub issuer: &'a str,
    pub base: &'a str,
}

impl Ctx<'_> {
    /// Picks the English or Japanese text.
    fn t<'s>(&self, en: &'s str, ja: &'s str) -> &'s str {
        match self.lang {
            Language::Ja => ja,
            Language::En => en,
        }
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query value.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "\
*{box-sizing:border-box}\
html{-webkit-text-size-adjust:100%;text-size-adjust:100%}\
body{margin:0;font-family:system-ui,-apple-system,\"Hiragino Sans\",\"Noto Sans JP\",\"Segoe UI\",sans-serif;\
line-height:1.6;color:#1b1b1b;background:#f3f4f6}\
main{max-width:34rem;margin:0 auto;padding:1rem .75rem 2rem}\
header{margin:0 0 1rem}\
.issuer{margin:0;color:#555;font-size:.9rem;overflow-wrap:anywhere}\
h1{font-size:1.35rem;line-height:1.35;margin:.2rem 0 0}\
h2{font-size:1.1rem;margin:0 0 .5rem}\
section{background:#fff;border:1px solid #dcdfe4;border-radius:.5rem;padding:1rem;margin:0 0 1rem}\
p{margin:.5rem 0}\
label{display:block;font-weight:600;margin:.9rem 0 .2rem}\
.hint{display:block;color:#555;font-size:.85rem;font-weight:400}\
input{display:block;width:100%;max-width:100%;font-size:1.15rem;padding:.6rem;border:1px solid #8a8f98;border-radius:.3rem;background:#fff;color:#1b1b1b}\
button{display:block;width:100%;margin-top:1.2rem;font-size:1.1rem;font-weight:600;padding:.75rem;border:0;border-radius:.3rem;background:#0b57a4;color:#fff}\
.msg{padding:.7rem .8rem;border-radius:.3rem;margin:0 0 1rem;overflow-wrap:anywhere}\
.error{background:#fdecea;border:1px solid #e4a4a4}\
.ok{background:#e7f4e8;border:1px solid #94c79a}\
.note{background:#fff8e1;border:1px solid #e6cf7a}\
.qr{text-align:center;margin:.5rem 0}\
.qr svg{width:16rem;max-width:100%;height:auto}\
a.add{display:block;text-align:center;padding:.7rem;margin:.8rem 0;border:2px solid #0b57a4;border-radius:.3rem;\
color:#0b57a4;font-weight:600;text-decoration:none}\
.wrap{overflow-wrap:anywhere;word-break:break-all}\
.secret{font-family:ui-monospace,\"SF Mono\",Menlo,Consolas,monospace;font-size:1.2rem;letter-spacing:.04em;\
background:#f3f4f6;padding:.5rem;border-radius:.3rem;overflow-wrap:anywhere}\
dl{margin:.5rem 0}dt{font-weight:600}dd{margin:0 0 .4rem;overflow-wrap:anywhere}\
nav{text-align:center;font-size:.9rem;margin-top:1.5rem}\
nav a{color:#0b57a4;margin:0 .5rem}\
ol.codes{font-family:ui-monospace,\"SF Mono\",Menlo,Consolas,monospace;font-size:1.2rem;letter-spacing:.04em;\
margin:.8rem 0;padding-left:2.4rem}\
ol.codes li{margin:0 0 .3rem;white-space:nowrap;break-inside:avoid}\
@media (min-width:30rem){ol.codes{columns:2;column-gap:2rem}}\
@media print{body{background:#fff;color:#000}main{max-width:none;padding:0}\
section{border:1px solid #000;break-inside:avoid}.msg{background:none;border:0;padding:0}nav{display:none}}";

/// The frame around every page.
fn layout(ctx: &Ctx<'_>, title: &str, content: &str, nav: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"robots\" content=\"noindex, nofollow\">\n\
         <title>{title} | {issuer}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <header><p class=\"issuer\">{issuer}</p><h1>{title}</h1></header>\n{content}{nav}</main>\n</body>\n</html>\n",
        lang = ctx.lang.as_str(),
        title = esc(title),
        issuer = esc(ctx.issuer),
    )
}

/// A message box above a form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Wrong service ID, user ID or activation password; tries left when
    /// the IDs were known.
    WrongPassword { attempts_left: Option<u32> },
    /// A field was left empty.
    MissingFields,
    /// The first code did not match.
    WrongCode,
}

fn notice_html(ctx: &Ctx<'_>, notice: Notice) -> String {
    let text = match notice {
        Notice::WrongPassword { attempts_left } => {
            let mut text = ctx
                .t(
                    "The service ID, user ID or activation password is not correct.",
                    "サービスID、ユーザIDまたは利用開始パスワードが正しくありません。",
                )
                .to_owned();
            if let Some(n) = attempts_left {
                text.push(' ');
                text.push_str(&match ctx.lang {
                    Language::En if n == 1 => "1 try left: after another wrong activation password this setup can no longer be used.".to_owned(),
                    Language::En => format!("{n} tries left."),
                    Language::Ja => format!("あと{n}回入力できます。規定回数を超えるとこのトークンは無効になります。"),
                });
            }
            text
        }
        Notice::MissingFields => ctx
            .t("Please fill in every field.", "すべての項目を入力してください。")
            .to_owned(),
        Notice::WrongCode => ctx
            .t(
                "The one-time password does not match. Check that the phone's date and time are set correctly, \
                 wait for the next password and type it again.",
                "ワンタイムパスワードが正しくありません。携帯電話機の日付と時刻の設定を確認し、\
                 次のパスワードが表示されてから再度入力してください。",
            )
            .to_owned(),
    };
    format!("<p class=\"msg error\" role=\"alert\">{}</p>\n", esc(&text))
}

/// Step 1: service ID, user ID and activation password (seed step 6,
/// "アプリの初期設定").
pub fn setup_form(
    ctx: &Ctx<'_>,
    service_id: &str,
    user_id: &str,
    notice: Option<Notice>,
) -> String {
    let mut content = String::new();
    if let Some(n) = notice {
        content.push_str(&notice_html(ctx, n));
    }
    let _ = write!(
        content,
        "<section>\n<p>{intro}</p>\n\
         <form method=\"post\" action=\"{base}/setup\">\n\
         <input type=\"hidden\" name=\"lang\" value=\"{lang}\">\n\
         <label for=\"sid\">{sid_label}</label>\n\
         <input id=\"sid\" name=\"service_id\" value=\"{sid}\" required autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" maxlength=\"64\">\n\
         <label for=\"uid\">{uid_label}<span class=\"hint\">{uid_hint}</span></label>\n\
         <input id=\"uid\" name=\"user_id\" value=\"{uid}\" required autocomplete=\"off\" inputmode=\"numeric\" maxlength=\"32\">\n\
         <label for=\"pw\">{pw_label}<span class=\"hint\">{pw_hint}</span></label>\n\
         <input id=\"pw\" name=\"activation_password\" type=\"password\" required autocomplete=\"off\" inputmode=\"numeric\" maxlength=\"8\">\n\
         <button type=\"submit\">{send}</button>\n</form>\n</section>\n",
        intro = esc(ctx.t(
            "Enter the service ID and user ID from the setup mail, and the activation password \
             that you chose when the token was issued.",
            "トークン発行ご案内メールに記載の「サービスID」「ユーザID」と、トークン発行時に\
             お客様が決められた「利用開始パスワード」を入力して送信してください。",
        )),
        base = esc(ctx.base),
        lang = ctx.lang.as_str(),
        sid_label = esc(ctx.t("Service ID", "サービスID")),
        sid = esc(service_id),
        uid_label = esc(ctx.t("User ID", "ユーザID")),
        uid_hint = esc(ctx.t(
            "14 digits; hyphens and spaces may be left out",
            "14桁の数字（ハイフン・空白は省略できます）",
        )),
        uid = esc(user_id),
        pw_label = esc(ctx.t("Activation password", "利用開始パスワード")),
        pw_hint = esc(ctx.t("4 to 8 digits", "半角数字4桁以上8桁以内")),
        send = esc(ctx.t("Send", "送信")),
    );
    let nav = language_nav(ctx, service_id, user_id);
    layout(
        ctx,
        ctx.t("One-time password setup", "ワンタイムパスワード初期設定"),
        &content,
        &nav,
    )
}

/// Links to the same form in the other languages (relative, no script).
fn language_nav(ctx: &Ctx<'_>, service_id: &str, user_id: &str) -> String {
    let mut query = String::new();
    if !service_id.is_empty() {
        let _ = write!(query, "sid={}&", query_escape(service_id));
    }
    if !user_id.is_empty() {
        let _ = write!(query, "uid={}&", query_escape(user_id));
    }
    let link = |lang: Language, name: &str| {
        if lang == ctx.lang {
            format!("<span lang=\"{}\">{}</span>", lang.as_str(), esc(name))
        } else {
            format!(
                "<a lang=\"{l}\" hreflang=\"{l}\" href=\"{base}/setup?{q}lang={l}\">{name}</a>",
                l = lang.as_str(),
                base = esc(ctx.base),
                q = esc(&query),
                name = esc(name)
            )
        }
    };
    format!(
        "<nav>{} {}</nav>\n",
        link(Language::Ja, "日本語"),
        link(Language::En, "English")
    )
}

/// The delivered token, shown exactly once.
pub struct TokenView<'a> {
    pub service_id: &'a str,
    pub user_id: &'a str,
    pub account: &'a str,
    pub otpauth_uri: &'a str,
    /// Base32, grouped in fours.
    pub secret_grouped: &'a str,
    pub period: u64,
    pub digits: u32,
    pub algorithm: &'a str,
}

/// An inline SVG QR code of `data`; `None` if it does not fit a QR code.
pub fn qr_svg(data: &str) -> Option<Zeroizing<String>> {
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M).ok()?;
    let image = Zeroizing::new(
        code.render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .dark_color(svg::Color("#000"))
            .light_color(svg::Color("#fff"))
            .quiet_zone(true)
            .build(),
    );
    // Drop the XML declaration: the SVG is inlined in HTML.
    let start = image.find("<svg")?;
    Some(Zeroizing::new(image[start..].replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code\" ",
        1,
    )))
}

/// "Changes every minute" or "every N seconds".
fn period_sentence(ctx: &Ctx<'_>, period: u64) -> String {
    match (ctx.lang, period) {
        (Language::En, 60) => "The one-time password changes every minute.".to_owned(),
        (Language::En, p) => format!("The one-time password changes every {p} seconds."),
        (Language::Ja, 60) => "ワンタイムパスワードは1分ごとに変化します。".to_owned(),
        (Language::Ja, p) => format!("ワンタイムパスワードは{p}秒ごとに変化します。"),
    }
}

/// The token page: QR code, tap-to-add link, grouped secret, the period
/// and clock notes, then step 2 (type the first code).
pub fn token(ctx: &Ctx<'_>, view: &TokenView<'_>) -> Zeroizing<String> {
    let mut content = Zeroizing::new(String::new());
    let qr = qr_svg(view.otpauth_uri);
    let _ = write!(
        content,
        "<p class=\"msg ok\">{done}</p>\n\
         <section>\n<h2>{step1}</h2>\n<p>{scan}</p>\n",
        done = esc(ctx.t(
            "The activation password is correct. Add the token to your authenticator app.",
            "利用開始パスワードを確認しました。ワンタイムパスワードアプリにトークンを追加してください。",
        )),
        step1 = esc(ctx.t("Step 1: add the token", "手順1 トークンの追加")),
        scan = esc(ctx.t(
            "Scan this QR code with your authenticator app, or, on this phone, tap the button below.",
            "ワンタイムパスワードアプリでこのQRコードを読み取るか、この携帯電話・スマートフォンで下のボタンを押してください。",
        )),
    );
    if let Some(svg) = &qr {
        let _ = writeln!(content, "<div class=\"qr\">{}</div>", svg.as_str());
    }
    let _ = write!(
        content,
        "<a class=\"add wrap\" href=\"{uri}\">{add}</a>\n\
         <p>{manual}</p>\n<p class=\"secret\">{secret}</p>\n\
         <dl>\n<dt>{account_label}</dt><dd>{issuer}: {account}</dd>\n\
         <dt>{kind_label}</dt><dd>{kind}</dd>\n</dl>\n\
         <p class=\"msg note\">{period_note} {clock_note}</p>\n\
         <p>{once}</p>\n</section>\n",
        uri = esc(view.otpauth_uri),
        add = esc(ctx.t("Add to authenticator app", "アプリにトークンを追加する")),
        manual = esc(ctx.t(
            "If neither works, enter this key by hand (time-based):",
            "読み取れない場合は、次のキーを手入力してください（時間ベース）。",
        )),
        secret = esc(view.secret_grouped),
        account_label = esc(ctx.t("Account", "アカウント")),
        issuer = esc(ctx.issuer),
        account = esc(view.account),
        kind_label = esc(ctx.t("Code", "パスワード")),
        kind = esc(&match ctx.lang {
            Language::En => format!(
                "{} digits, {}, every {} seconds",
                view.digits, view.algorithm, view.period
            ),
            Language::Ja => format!(
                "{}桁、{}、{}秒ごと",
                view.digits, view.algorithm, view.period
            ),
        }),
        period_note = esc(&period_sentence(ctx, view.period)),
        clock_note = esc(ctx.t(
            "If the phone's clock is not set correctly, the passwords will not work: set the date and time to automatic.",
            "携帯電話機の時刻設定が正しくない場合、正常に動作しませんのでご注意ください。日付と時刻は自動設定にしてください。",
        )),
        once = esc(ctx.t(
            "This key is shown only once: reloading this page will not show it again. Do not show it to anyone.",
            "このキーが表示されるのは一度だけです。再読み込みしても再表示されません。他人に見せないでください。",
        )),
    );
    content.push_str(&confirm_section(ctx, view.service_id, view.user_id));
    Zeroizing::new(layout(
        ctx,
        ctx.t("Add your token", "トークンの追加"),
        &content,
        "",
    ))
}

/// Step 2: the form for the first code.
fn confirm_section(ctx: &Ctx<'_>, service_id: &str, user_id: &str) -> String {
    format!(
        "<section>\n<h2>{step2}</h2>\n<p>{type_it}</p>\n\
         <form method=\"post\" action=\"{base}/setup/confirm\">\n\
         <input type=\"hidden\" name=\"lang\" value=\"{lang}\">\n\
         <input type=\"hidden\" name=\"service_id\" value=\"{sid}\">\n\
         <input type=\"hidden\" name=\"user_id\" value=\"{uid}\">\n\
         <dl><dt>{sid_label}</dt><dd>{sid}</dd><dt>{uid_label}</dt><dd>{uid}</dd></dl>\n\
         <label for=\"otp\">{otp_label}</label>\n\
         <input id=\"otp\" name=\"otp\" required autocomplete=\"one-time-code\" inputmode=\"numeric\" maxlength=\"16\">\n\
         <button type=\"submit\">{check}</button>\n</form>\n</section>\n",
        step2 = esc(ctx.t("Step 2: confirm", "手順2 認証確認")),
        type_it = esc(ctx.t(
            "Type the one-time password that your app shows now, then press Confirm.",
            "アプリに表示されているワンタイムパスワードを入力の上、「認証確認」ボタンを押してください。",
        )),
        base = esc(ctx.base),
        lang = ctx.lang.as_str(),
        sid = esc(service_id),
        uid = esc(user_id),
        sid_label = esc(ctx.t("Service ID", "サービスID")),
        uid_label = esc(ctx.t("User ID", "ユーザID")),
        otp_label = esc(ctx.t("One-time password", "ワンタイムパスワード")),
        check = esc(ctx.t("Confirm", "認証確認")),
    )
}

/// Step 2 again, after a wrong first code.
pub fn confirm_form(ctx: &Ctx<'_>, service_id: &str, user_id: &str, notice: Notice) -> String {
    let mut content = notice_html(ctx, notice);
    content.push_str(&confirm_section(ctx, service_id, user_id));
    layout(
        ctx,
        ctx.t("Confirm your token", "ワンタイムパスワード 認証確認"),
        &content,
        "",
    )
}

/// The end of the setup: the token is active.
pub fn confirmed(ctx: &Ctx<'_>, period: u64, adapted: bool, recovery_codes: &[&str]) -> String {
    let mut content = format!(
        "<p class=\"msg ok\">{}</p>\n<section>\n<p>{}</p>\n",
        esc(ctx.t(
            "Your one-time password is active.",
            "ワンタイムパスワードの設定が完了しました。"
        )),
        esc(ctx.t(
            "From now on, open the app to see the one-time password and type it when you log in.",
            "次回からは、アプリを起動するだけでワンタイムパスワードが表示されます。ログインの際に入力してください。",
        )),
    );
    if adapted {
        let _ = writeln!(
            content,
            "<p class=\"msg note\">{}</p>",
            esc(ctx.t(
                "Your app shows a new code every 30 seconds; that is fine. \
                 Your token has been switched to 30 seconds to match the app.",
                "お使いのアプリは30秒ごとに新しいワンタイムパスワードを表示します。問題ありません。\
                 トークンをアプリに合わせて30秒ごとに切り替えました。",
            ))
        );
    }
    let _ = write!(
        content,
        "<p>{} {}</p>\n</section>\n",
        esc(&period_sentence(ctx, period)),
        esc(ctx.t(
            "Keep the phone's date and time set to automatic.",
            "携帯電話機の時刻設定が正しくない場合、正常に動作しませんのでご注意ください。",
        ))
    );
    if !recovery_codes.is_empty() {
        content.push_str(&recovery_section(ctx, recovery_codes));
    }
    layout(ctx, ctx.t("Setup complete", "初期設定の完了"), &content, "")
}

/// The recovery codes, shown once after confirmation: what they are for,
/// the codes, and that the page will not show them again. It prints on
/// its own (the print style drops colours and navigation).
fn recovery_section(ctx: &Ctx<'_>, codes: &[&str]) -> String {
    let mut section = format!(
        "<section class=\"recovery\">\n<h2>{}</h2>\n<p>{}</p>\n<ol class=\"codes\">\n",
        esc(ctx.t("Recovery codes", "リカバリーコード")),
        esc(ctx.t(
            "If you lose your phone, type one of these codes instead of the one-time password to log in. \
             Each code works once.",
            "携帯電話機をなくした場合は、ワンタイムパスワードの代わりにこのコードを1つ入力してログインできます。\
             各コードは1回だけ使えます。",
        )),
    );
    for code in codes {
        let _ = writeln!(section, "<li>{}</li>", esc(code));
    }
    let _ = write!(
        section,
        "</ol>\n<p class=\"msg note\">{}</p>\n<p>{}</p>\n</section>\n",
        esc(ctx.t(
            "These codes are shown only now. Print this page or write them down, and keep them apart from your phone.",
            "このコードは今回しか表示されません。このページを印刷するか書き写して、携帯電話機とは別の場所に保管してください。",
        )),
        esc(ctx.t(
            "After logging in with a recovery code, ask your administrator for a new token for your new phone.",
            "リカバリーコードでログインした後は、新しい携帯電話機のために管理者にトークンの再発行を依頼してください。",
        )),
    );
    section
}

/// A page with one message and no form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// The setup link ran out of time.
    Expired,
    /// An enrolment that is not `issued` any more (or not `activated`,
    /// for confirmation).
    Gone(State),
    /// The wrong password just used up the last try.
    InvalidatedNow,
    /// Too many requests from this address.
    RateLimited,
    /// Too many activation requests at once.
    Busy,
    /// An unreadable form.
    BadRequest,
    /// Something failed on the server.
    Internal,
}

/// The page for `message`.
pub fn message(ctx: &Ctx<'_>, message: Message) -> String {
    let new_token = ctx.t(
        " Ask your administrator to issue a new token.",
        "管理者にトークンの再発行を依頼してください。",
    );
    let (title, text, again): (&str, String, bool) = match message {
        Message::Expired => (
            ctx.t("Link expired", "有効期限切れ"),
            format!(
                "{}{new_token}",
                ctx.t(
                    "This setup link has expired.",
                    "トークン発行サイトURLの有効期限が切れています。"
                )
            ),
            false,
        ),
        Message::InvalidatedNow | Message::Gone(State::Invalidated) => (
            ctx.t("Setup locked", "トークン無効"),
            format!(
                "{}{new_token}",
                ctx.t(
                    "The activation password was entered wrongly too many times, so this setup can no longer be used.",
                    "利用開始パスワードの入力誤りが規定回数に達したため、このトークンは無効になりました。",
                )
            ),
            false,
        ),
        Message::Gone(State::Activated) => (
            ctx.t("Already set up", "設定済み"),
            format!(
                "{}{}",
                ctx.t(
                    "This token has already been added to an app; its key is shown only once. \
                     Type the first one-time password on the page where the key was shown.",
                    "このトークンは既にアプリに追加されています（キーは一度だけ表示されます）。\
                     キーを表示した画面でワンタイムパスワードを入力して認証確認を行ってください。",
                ),
                ctx.t(
                    " If the key was lost, ask your administrator to issue a new token.",
                    "キーを紛失した場合は、管理者にトークンの再発行を依頼してください。",
                )
            ),
            false,
        ),
        Message::Gone(State::Active) => (
            ctx.t("Already active", "設定済み"),
            ctx.t(
                "This token is already active. Open the app to see the one-time password.",
                "このトークンは既に利用可能です。アプリを起動するとワンタイムパスワードが表示されます。",
            )
            .to_owned(),
            false,
        ),
        Message::Gone(State::Issued) => (
            ctx.t("Not set up yet", "未設定"),
            ctx.t(
                "Enter the activation password first to add the token to your app.",
                "先に利用開始パスワードを入力して、アプリにトークンを追加してください。",
            )
            .to_owned(),
            true,
        ),
        Message::Gone(State::Replaced | State::Revoked | State::Unassigned) => (
            ctx.t("No longer valid", "トークン無効"),
            format!(
                "{}{new_token}",
                ctx.t(
                    "This token is no longer valid: a newer one was issued or it was withdrawn.",
                    "このトークンは無効です（新しいトークンが発行されたか、取り消されました）。",
                )
            ),
            false,
        ),
        Message::RateLimited => (
            ctx.t("Too many attempts", "操作回数の超過"),
            ctx.t(
                "There were too many attempts from your network. Wait a minute and try again.",
                "短時間に多数の操作が行われました。1分ほど待ってから再度お試しください。",
            )
            .to_owned(),
            true,
        ),
        Message::Busy => (
            ctx.t("Busy", "混雑中"),
            ctx.t(
                "Many activations are being checked right now. Wait a minute and try again.",
                "現在、利用開始の処理が混み合っています。1分ほど待ってから再度お試しください。",
            )
            .to_owned(),
            true,
        ),
        Message::BadRequest => (
            ctx.t("Could not read the form", "入力エラー"),
            ctx.t(
                "The form could not be read. Please start again from the link in the setup mail.",
                "入力内容を読み取れませんでした。メールに記載のURLからやり直してください。",
            )
            .to_owned(),
            true,
        ),
        Message::Internal => (
            ctx.t("Temporary problem", "一時的なエラー"),
            ctx.t(
                "A temporary problem occurred on the server. Please try again later.",
                "サーバで一時的な問題が発生しました。しばらくしてから再度お試しください。",
            )
            .to_owned(),
            true,
        ),
    };
    let mut content = format!("<p class=\"msg error\" role=\"alert\">{}</p>\n", esc(&text));
    if again {
        let _ = writeln!(
            content,
            "<nav><a href=\"{}/setup?lang={}\">{}</a></nav>",
            esc(ctx.base),
            ctx.lang.as_str(),
            esc(ctx.t("Back to the setup page", "初期設定画面へ戻る"))
        );
    }
    layout(ctx, title, &content, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(lang: Language) -> Ctx<'static> {
        Ctx {
            lang,
            issuer: "Example <Corp>",
            base: "",
        }
    }

    #[test]
    fn escapes_everything_from_outside() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = setup_form(&ctx(Language::En), "\"><script>x</script>", "<b>", None);
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("Example &lt;Corp&gt;"));
    }

    #[test]
    fn qr_is_inline_svg_that_scales() {
        let svg = qr_svg("otpauth://totp/X:y?secret=GEZDGNBVGY3TQOJQ&period=60").expect("fits");
        assert!(svg.starts_with("<svg role=\"img\""));
        assert!(svg.contains("viewBox"));
        assert!(!svg.contains("<?xml"));
    }

    #[test]
    fn both_languages_have_the_seed_wording() {
        let ja = setup_form(&ctx(Language::Ja), "", "", None);
        for words in [
            "サービスID",
            "ユーザID",
            "利用開始パスワード",
            "lang=\"ja\"",
        ] {
            assert!(ja.contains(words), "{words}");
        }
        let view = TokenView {
            service_id: "S",
            user_id: "1234-5678-9012-34",
            account: "alice",
            otpauth_uri: "otpauth://totp/X:alice?secret=AAAA&period=60",
            secret_grouped: "AAAA BBBB",
            period: 60,
            digits: 6,
            algorithm: "SHA1",
        };
        let ja = token(&ctx(Language::Ja), &view);
        assert!(ja.contains("ワンタイムパスワードは1分ごとに変化します"));
        assert!(ja.contains("携帯電話機の時刻設定が正しくない場合"));
        let en = token(&ctx(Language::En), &view);
        assert!(en.contains("changes every minute"));
        let en = token(&ctx(Language::En), &TokenView { period: 30, ..view });
        assert!(en.contains("changes every 30 seconds"));
        assert!(confirmed(&ctx(Language::Ja), 30, true, &[]).contains("30秒ごとに"));
        assert!(confirmed(&ctx(Language::En), 30, true, &[])
            .contains("app shows a new code every 30 seconds; that is fine"));
    }

    #[test]
    fn language_links_are_relative_and_keep_the_ids() {
        let page = setup_form(&ctx(Language::En), "EX AMPLE", "1234", None);
        assert!(page.contains("href=\"/setup?sid=EX%20AMPLE&amp;uid=1234&amp;lang=ja\""));
    }

    #[test]
    fn recovery_codes_are_listed_with_what_they_are_for_only_when_there_are_some() {
        let codes = ["12345-67890", "00000-11111"];
        let ja = confirmed(&ctx(Language::Ja), 60, false, &codes);
        assert!(ja.contains("<li>12345-67890</li>\n<li>00000-11111</li>"));
        assert!(ja.contains("リカバリーコード"));
        assert!(ja.contains("今回しか表示されません"));
        let en = confirmed(&ctx(Language::En), 60, false, &codes);
        assert!(en.contains("If you lose your phone"));
        assert!(en.contains("shown only now"));
        let none = confirmed(&ctx(Language::En), 60, false, &[]);
        assert!(!none.contains("class=\"recovery\""));
        assert!(!none.contains("<ol"));
    }
}
