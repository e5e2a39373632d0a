//! The status page's static parts on the metrics listener: `GET /` (the HTML), `/status.js`
//! and `/status.css`, compiled into the binary (src/ops/status_page/), and the headers every
//! status response carries. `/status.json`, the data, is `status.rs`.
//!
//! The page needs nothing from outside (an air-gapped host sees all of it): no fonts, no
//! images (the icon is an empty `data:` URL), no third-party script. Its
//! `Content-Security-Policy` allows only same-origin scripts, styles and fetches
//! (`script-src 'self'`, not a nonce or hash: the script is a file of its own, so the policy
//! does not change when the script does and no inline code is ever allowed at all); no
//! inline script or style attribute, no frames, forms, plugins or base changes. The page
//! draws its SVG with presentation attributes and classes, never `style=`.

/// `Content-Security-Policy` of every status response.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// A static part of the page.
pub(super) struct Asset {
    pub content_type: &'static str,
    pub body: &'static [u8],
}

pub(super) const PAGE: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("status_page/index.html"),
};
const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_bytes!("status_page/status.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_bytes!("status_page/status.css"),
};

/// The static part at `path`, if it is one.
pub(super) fn asset(path: &[u8]) -> Option<&'static Asset> {
    match path {
        b"/" | b"/index.html" => Some(&PAGE),
        b"/status.js" => Some(&SCRIPT),
        b"/status.css" => Some(&STYLE),
        _ => None,
    }
}

/// The headers of a status response of `content_type`: the policy, no sniffing, no referrer,
/// no caching (the page is small and the daemon's version may change under it).
pub(super) fn headers(content_type: &'static str) -> [(&'static str, &'static str); 5] {
    [
        ("Content-Type", content_type),
        ("Content-Security-Policy", CSP),
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", "no-store"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_loads_nothing_from_outside() {
        let page = std::str::from_utf8(PAGE.body).unwrap();
        let script = std::str::from_utf8(SCRIPT.body).unwrap();
        // Exactly one script element, an external same-origin one.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"/status.js\" defer></script>"));
        assert!(
            !page.contains("style="),
            "inline styles are refused by the policy"
        );
        let handler = page.split(" on").skip(1).any(|rest| {
            let word = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            word.len() < rest.len() && word.starts_with('=')
        });
        assert!(!handler, "no inline event handlers");
        for text in [page, script, std::str::from_utf8(STYLE.body).unwrap()] {
            assert!(!text.contains("http://") || text.contains("http://www.w3.org/2000/svg"));
            assert!(!text.contains("https://"));
            assert!(!text.contains("@import") && !text.contains("url("));
        }
        // Client strings become text, never markup.
        assert!(!script.contains("innerHTML") && !script.contains("outerHTML"));
        assert!(!script.contains("insertAdjacentHTML") && !script.contains("document.write"));
        assert!(!script.contains("eval(") && !script.contains("console."));
        assert!(asset(b"/").is_some() && asset(b"/status.json").is_none());
    }
}
