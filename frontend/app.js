// The example frontend: Cognito sign-up/sign-in with plain fetch calls (the same JSON API the
// AWS SDKs use; these operations need no AWS credentials), then GET /tenant with the user's
// access token until the tenant is ready, then a message round trip over the tenant's own vhost
// with Web-STOMP (@stomp/stompjs). Settings come from config.json beside this file:
//   {"cognitoEndpoint": "https://cognito-idp.<region>.amazonaws.com/",
//    "clientId": "<app client id>", "apiUrl": "https://<api id>.execute-api.<region>.amazonaws.com"}
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// What the page knows, for people and for the browser test. Never the password of the tenant.
const state = { step: "signed-out", sub: null, username: null, tenant: null, history: [] };
let accessToken = null;
let tenantPassword = null;
let config = null;

function show(step, text) {
  state.step = step;
  state.history.push(step);
  const el = $("status");
  el.dataset.state = step;
  el.textContent = text;
}

async function loadConfig() {
  if (!config) {
    const r = await fetch("config.json", { cache: "no-store" });
    if (!r.ok) throw new Error("config.json is missing (see the Frontend section of the README)");
    config = await r.json();
  }
  return config;
}

class CognitoError extends Error {
  constructor(type, message) { super(message); this.type = type; }
}

// One Cognito user pool call (AWSCognitoIdentityProviderService.<target>).
async function cognito(target, body) {
  const { cognitoEndpoint } = await loadConfig();
  const r = await fetch(cognitoEndpoint, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-amz-json-1.1",
      "X-Amz-Target": `AWSCognitoIdentityProviderService.${target}`,
    },
    body: JSON.stringify(body),
  });
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) {
    const type = (doc.__type || r.headers.get("x-amzn-errortype") || "Error").split("#").pop();
    throw new CognitoError(type, doc.message || doc.Message || `${target} failed (${r.status})`);
  }
  return doc;
}

async function signUp(email, password) {
  const { clientId } = await loadConfig();
  const out = await cognito("SignUp", {
    ClientId: clientId, Username: email, Password: password,
    UserAttributes: [{ Name: "email", Value: email }],
  });
  state.sub = out.UserSub;
  state.username = email;
  return out;
}

// Cognito runs the PostConfirmation trigger (which gives the person a tenant) inside this call.
async function confirm(code) {
  const { clientId } = await loadConfig();
  await cognito("ConfirmSignUp", { ClientId: clientId, Username: state.username, ConfirmationCode: code });
}

async function signIn(email, password) {
  const { clientId } = await loadConfig();
  const out = await cognito("InitiateAuth", {
    ClientId: clientId, AuthFlow: "USER_PASSWORD_AUTH",
    AuthParameters: { USERNAME: email, PASSWORD: password },
  });
  accessToken = out.AuthenticationResult.AccessToken;
  state.username = email;
}

// GET /tenant until it is ready (202 → wait Retry-After seconds), for up to five minutes.
async function waitForTenant() {
  const { apiUrl } = await loadConfig();
  const giveUp = Date.now() + 5 * 60 * 1000;
  while (Date.now() < giveUp) {
    let r;
    try {
      r = await fetch(`${apiUrl.replace(/\/$/, "")}/tenant`, {
        headers: { Authorization: `Bearer ${accessToken}` }, cache: "no-store",
      });
    } catch (e) {
      show("waiting", "The service is not reachable; trying again…");
      await sleep(3000);
      continue;
    }
    const body = await r.json().catch(() => ({}));
    if (r.status === 200) {
      tenantPassword = body.password;
      state.tenant = { broker: body.amqp_url, webStompUrl: body.web_stomp_url, vhost: body.vhost, username: body.username };
      return state.tenant;
    }
    if (r.status === 202 || r.status === 503) {
      show("provisioning", "Setting up your workspace…");
      await sleep(1000 * Number(r.headers.get("Retry-After") || 2));
      continue;
    }
    if (r.status === 403) { show("suspended", "Your workspace is suspended. Please contact support."); return null; }
    if (r.status === 410) { show("offboarded", "This workspace was closed."); return null; }
    if (r.status === 401) { show("signed-out", "Your session ended: please sign in again."); return null; }
    show("failed", `Unexpected answer from the service (${r.status}).`);
    return null;
  }
  show("failed", "Your workspace is taking longer than expected. Please try again later.");
  return null;
}

// Connects to `vhost` with the tenant's own credentials over Web-STOMP. Resolves with the
// connected client, or rejects with the broker's reason.
function connect(vhost) {
  return new Promise((resolve, reject) => {
    const client = new StompJs.Client({
      brokerURL: state.tenant.webStompUrl,
      connectHeaders: { login: state.tenant.username, passcode: tenantPassword, host: vhost },
      reconnectDelay: 0,
      heartbeatIncoming: 0,
      heartbeatOutgoing: 0,
    });
    let settled = false;
    const fail = (why) => {
      if (settled) return;
      settled = true;
      client.deactivate();
      reject(new Error(why));
    };
    client.onConnect = () => { settled = true; resolve(client); };
    client.onStompError = (frame) => fail(frame.headers.message || "refused by the broker");
    client.onWebSocketError = () => fail("the broker's Web-STOMP endpoint is not reachable");
    client.onWebSocketClose = (ev) => fail(`connection closed (${ev.code})`);
    setTimeout(() => fail("no answer from the broker in 10 s"), 10000);
    client.activate();
  });
}

// Sends a message to a queue of the tenant's vhost and waits for it to come back.
async function roundTrip() {
  const client = await connect(state.tenant.vhost);
  const text = `hello from ${state.username} at ${new Date().toISOString()}`;
  const received = new Promise((resolve, reject) => {
    client.subscribe("/queue/post-signup-example", (msg) => { msg.ack(); resolve(msg.body); }, { ack: "client" });
    setTimeout(() => reject(new Error("the message did not come back in 10 s")), 10000);
  });
  client.publish({ destination: "/queue/post-signup-example", body: text });
  const body = await received;
  await client.deactivate();
  if (body !== text) throw new Error("another message came back");
  return body;
}

// Whether these credentials reach another vhost (they must not): {ok, error}.
async function tryVhost(vhost) {
  try {
    const client = await connect(vhost);
    await client.deactivate();
    return { ok: true };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

async function afterSignIn() {
  show("provisioning", "Setting up your workspace…");
  const tenant = await waitForTenant();
  if (!tenant) return;
  $("tenant-broker").textContent = tenant.webStompUrl || tenant.broker;
  $("tenant-vhost").textContent = tenant.vhost;
  $("tenant-username").textContent = tenant.username;
  $("tenant").hidden = false;
  show("ready", "Your workspace is ready. Sending a message through it…");
  if (!tenant.webStompUrl) { show("ready", "Your workspace is ready (this broker has no Web-STOMP endpoint)."); return; }
  try {
    const body = await roundTrip();
    $("round-trip").hidden = false;
    $("round-trip").textContent = `Sent and received: "${body}"`;
    show("round-trip-ok", "Your workspace is ready: a message went through your own vhost and back.");
  } catch (e) {
    show("failed", `Your workspace is ready, but the message round trip failed: ${e.message}`);
  }
}

function guard(step) {
  return async (ev) => {
    ev.preventDefault();
    const button = ev.target.querySelector("button");
    button.disabled = true;
    try { await step(); } catch (e) { show("failed", e.message); } finally { button.disabled = false; }
  };
}

$("signup").addEventListener("submit", guard(async () => {
  await signUp($("signup-email").value, $("signup-password").value);
  $("signup").hidden = true;
  $("confirm").hidden = false;
  show("confirming", "We sent you a code: enter it to confirm your email.");
}));

$("confirm").addEventListener("submit", guard(async () => {
  show("confirming", "Confirming…");
  await confirm($("confirm-code").value.trim());
  $("confirm").hidden = true;
  await signIn(state.username, $("signup-password").value);
  await afterSignIn();
}));

$("show-signin").addEventListener("click", (ev) => {
  ev.preventDefault();
  $("signup").hidden = true;
  $("signin").hidden = false;
});

$("signin").addEventListener("submit", guard(async () => {
  await signIn($("signin-email").value, $("signin-password").value);
  $("signin").hidden = true;
  await afterSignIn();
}));

window.tenantDemo = { state, tryVhost };
