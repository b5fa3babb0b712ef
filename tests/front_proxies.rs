//! Portcullis behind front proxies set up the way new users set them up: real nginx and Caddy
//! on non-default ports, a real IdP, a real browser-like client following real redirects.
//!
//! - nginx in front of the proxy with the most common idiom, `proxy_set_header Host $host`
//!   (which drops the port) and `X-Forwarded-Host $host:$server_port`: the public origin comes
//!   from the trusted proxy's headers, so logins return to the right port and CSRF checks see
//!   the right origin.
//! - Caddy on one port doing forward auth, Portcullis' public URL on another: an
//!   `allowed_redirect_domains` entry with a port lets the login return to the app.

mod support;

use support::front::{Caddy, Nginx};
use support::idp::{Browser, Idp, IdpClient, IdpConfig, PASSWORD};
use support::{free_port, Portcullis, Setup, Upstream};

const HOST: &str = "app.localhost";
const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn idp_for(public_url: &str) -> Idp {
    Idp::start(IdpConfig::default().client(IdpClient::new(
        "portcullis",
        "portcullis-secret",
        &format!("{public_url}/.portcullis/callback"),
    )))
}

fn portcullis(
    setup: Setup,
    server_extra: &str,
    public_url: &str,
    idp: &Idp,
    routes: &str,
) -> Portcullis {
    setup.start(&format!(
        "server:\n  listen: [\"127.0.0.1:@HTTP@\"]\n  threads: 1\n  public_url: {public_url}\n{server_extra}\
         admin:\n  listen: 127.0.0.1:@ADMIN@\n\
         session:\n  secrets: [\"{SECRET}\"]\n  cookie: {{ secure: false }}\n\
         providers:\n  - id: test\n    type: oidc\n    issuer: {}\n    client_id: portcullis\n    client_secret: portcullis-secret\n    scopes: [openid, email, profile, groups]\n\
         routes:\n{routes}",
        idp.issuer()
    ))
}

/// nginx on a free (non-default) port, proxying everything to Portcullis with `$host`.
fn nginx_in_front(portcullis_port: u16) -> Nginx {
    Nginx::start(&format!(
        r#"
server {{
    listen 127.0.0.1:@PORT@;
    server_name {HOST};
    location / {{
        proxy_pass http://127.0.0.1:{portcullis_port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Host $host:$server_port;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
}}
"#
    ))
}

#[tokio::test]
async fn nginx_with_host_and_forwarded_host_on_a_non_default_port_logs_in() {
    let up = Upstream::start();
    let setup = Setup::new();
    let nginx = nginx_in_front(setup.http);
    let public_url = format!("http://{HOST}:{}", nginx.port());
    let idp = idp_for(&public_url);
    let routes = format!(
        "  - {{ host: {HOST}, upstream: \"{}\", allow: {{ groups: [staff] }} }}\n",
        up.url()
    );
    let pc = portcullis(
        setup,
        "  trusted_proxies: [127.0.0.1/32]\n",
        &public_url,
        &idp,
        &routes,
    );
    pc.ready().await;

    let browser = Browser::with_hosts(&[(HOST, nginx.addr())]);
    let page = browser
        .login(&format!("{public_url}/private/page?x=1"), "alice", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}\n{}", page.body, nginx.error_log());
    assert_eq!(page.url.as_str(), format!("{public_url}/private/page?x=1"));
    let seen = up.last();
    assert_eq!(seen.uri, "/private/page?x=1");
    assert_eq!(seen.header("x-auth-request-user"), Some("alice"));

    // CSRF compares the Origin with the public origin, port included.
    let cookie = browser
        .cookie_for(&public_url, "_portcullis")
        .expect("a session cookie");
    let client = reqwest::Client::builder()
        .no_proxy()
        .resolve(HOST, nginx.addr())
        .build()
        .unwrap();
    let post = |origin: String| {
        client
            .post(format!("{public_url}/private/form"))
            .header("cookie", format!("_portcullis={cookie}"))
            .header("origin", origin)
            .header("accept", "application/json")
            .send()
    };
    assert_eq!(post(public_url.clone()).await.unwrap().status(), 200);
    assert_eq!(
        post(format!("http://{HOST}")).await.unwrap().status(),
        403,
        "the same host on another port is another origin"
    );
    assert_eq!(
        post(format!("http://{HOST}:1")).await.unwrap().status(),
        403
    );
}

#[tokio::test]
async fn forwarded_host_from_an_untrusted_peer_is_not_believed() {
    let up = Upstream::start();
    let setup = Setup::new();
    let public_url = format!("http://{HOST}:{}", setup.http);
    let idp = idp_for(&public_url);
    let routes = format!("  - {{ host: {HOST}, upstream: \"{}\" }}\n", up.url());
    // No trusted_proxies: X-Forwarded-Host and -Port are a client's word.
    let pc = portcullis(setup, "", &public_url, &idp, &routes);
    pc.ready().await;
    let forged = [
        ("x-forwarded-host", "evil.test:8443"),
        ("x-forwarded-port", "8443"),
        ("accept", "text/html"),
    ];
    // The login redirect returns to the Host the client named, not to the forged one.
    let r = support::raw_get(pc.http_port(), HOST, "/private", &forged).await;
    assert_eq!(r.status, 302);
    let location = r.header("location").expect("a login redirect");
    let rd = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "rd")
        .map(|(_, v)| v.into_owned())
        .expect("rd");
    assert_eq!(rd, format!("http://{HOST}/private"), "{location}");
}

/// Caddy's forward-auth site for the app on `@PORT@`, Portcullis at `portcullis`.
fn caddy_forward_auth(portcullis: &str, app: &str) -> String {
    format!(
        r#"http://{HOST}:@PORT@ {{
	handle /.portcullis/* {{
		reverse_proxy {portcullis}
	}}
	handle {{
		forward_auth {portcullis} {{
			uri /.portcullis/auth
			copy_headers X-Auth-Request-User
		}}
		reverse_proxy {app}
	}}
}}
"#
    )
}

#[tokio::test]
async fn caddy_on_another_port_than_the_public_url_needs_an_allowed_port() {
    for allowed in [true, false] {
        let up = Upstream::start();
        let setup = Setup::new();
        let pc_addr = format!("127.0.0.1:{}", setup.http);
        let caddy = Caddy::start(&caddy_forward_auth(&pc_addr, &up.addr.to_string()));
        // The public URL is Portcullis itself, on its own port; the app is Caddy's port.
        let public_url = format!("http://{HOST}:{}", setup.http);
        let idp = idp_for(&public_url);
        let extra = if allowed {
            format!(
                "  trusted_proxies: [127.0.0.1/32]\n  allowed_redirect_domains: [\"{HOST}:{}\"]\n",
                caddy.port()
            )
        } else {
            "  trusted_proxies: [127.0.0.1/32]\n".to_string()
        };
        let routes = format!("  - {{ host: {HOST} }}\n");
        let pc = portcullis(setup, &extra, &public_url, &idp, &routes);
        pc.ready().await;
        let app_url = format!("http://{HOST}:{}/private", caddy.port());
        let browser = Browser::with_hosts(&[(HOST, caddy.addr())]);
        if allowed {
            let page = browser.login(&app_url, "alice", PASSWORD).await;
            assert_eq!(page.status, 200, "{}\n{}", page.body, caddy.log());
            assert_eq!(page.url.as_str(), app_url);
            assert_eq!(up.last().header("x-auth-request-user"), Some("alice"));
        } else {
            let page = browser.get(&app_url).await;
            assert_eq!(
                page.status, 400,
                "an app on another port than the public URL needs allowed_redirect_domains: {}",
                page.body
            );
            assert!(page.body.contains("return URL"), "{}", page.body);
            assert_eq!(up.count(), 0);
        }
        drop(pc);
        let _ = free_port();
    }
}
