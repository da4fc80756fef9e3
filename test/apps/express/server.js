// A small but real Express 4 + express-session app that the differential
// security tests put behind totpgate as its upstream. It does what many
// production apps do, including their usual weaknesses, so the tests can
// see whether the sidecar's view of a request matches the app's.
//
// Env:
//   PORT        listen on 127.0.0.1:PORT (required)
//   LOGIN_MODE  regenerate (default): a login gets a fresh session id;
//               inplace: the user is written into the session the client
//               already had, without regenerating it (session fixation:
//               the vulnerable pattern, on purpose)
//
// Routing keeps Express's defaults: case-insensitive, and a trailing slash
// is optional (/LOGIN/ is /login).
'use strict';

const express = require('express');
const session = require('express-session');
const compression = require('compression');

const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error('PORT must be set to a port number');
  process.exit(2);
}
const mode = process.env.LOGIN_MODE || 'regenerate';
if (mode !== 'regenerate' && mode !== 'inplace') {
  console.error(`LOGIN_MODE must be regenerate or inplace, not ${mode}`);
  process.exit(2);
}

const users = new Set(['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy']);
const password = 'pw';

const app = express();
app.disable('x-powered-by');

// Every answer is gzip'd when the client accepts it, however small.
app.use(compression({ threshold: 0 }));

app.use(session({
  secret: 'totpgate-test-express-secret', // fixed: a test fixture, not a secret
  resave: false,
  saveUninitialized: false,
  // name stays the default connect.sid; the store is the default MemoryStore
}));

app.use(express.json({ type: ['application/json', 'text/plain', 'application/*+json'] }));
app.use(express.urlencoded({ extended: false }));

app.all('/login', (req, res, next) => {
  const creds = (req.method === 'GET' ? req.query : req.body) || {};
  const { username, password: given } = creds;
  // A repeated field arrives as an array (or an object from qs brackets):
  // anything but a string is a failed login.
  if (typeof username !== 'string' || typeof given !== 'string') {
    return res.status(401).json({ error: 'invalid credentials' });
  }
  // Lower-cased like many apps do for e-mail addresses.
  const name = String(username).toLowerCase();
  if (!users.has(name) || given !== password) {
    return res.status(401).json({ error: 'invalid credentials' });
  }
  if (mode === 'inplace') {
    req.session.user = name;
    return res.json({ user: { id: name } });
  }
  req.session.regenerate((err) => {
    if (err) return next(err);
    req.session.user = name;
    res.json({ user: { id: name } });
  });
});

// Routes that log a user in without being "the login route" (what the
// session-credential tests put behind a gate that only knows /login).
// Their answers name nobody: the session cookie is all they give.
function logInAfter(check) {
  return (req, res, next) => {
    const { username, password: given } = (req.method === 'GET' ? req.query : req.body) || {};
    if (typeof username !== 'string' || typeof given !== 'string') {
      return res.status(400).json({ error: 'bad request' });
    }
    const name = username.toLowerCase();
    if (!check(name, given)) return res.status(403).json({ error: 'refused' });
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user = name;
      res.json({ ok: true });
    });
  };
}

// Sign up: a new name is created; an existing one with its password is
// logged in (the "join or sign in" form many apps have). Either way the
// answer starts a session.
app.post('/signup', logInAfter((name, given) => {
  if (!users.has(name)) {
    users.add(name);
    return given === password;
  }
  return given === password;
}));

// Password reset that signs the user in, as Devise does by default. The
// password field stands for the reset token of the e-mailed link.
app.post('/password/reset', logInAfter((name, given) => users.has(name) && given === password));

app.get('/', (req, res) => {
  req.session.seen = true; // an anonymous visitor gets a session cookie too
  res.type('text/plain').send(`home ${req.session.user || 'anonymous'}`);
});

app.get('/api/me', (req, res) => {
  if (!req.session.user) {
    return res.status(401).json({ error: 'not logged in' });
  }
  res.json({ id: req.session.user });
});

// How many live sessions a user has, so a test can tell that a session it
// never saw (held by the gate, then revoked) is gone. A test fixture only.
app.get('/api/sessions', (req, res, next) => {
  req.sessionStore.all((err, sessions) => {
    if (err) return next(err);
    const n = Object.values(sessions || {}).filter((s) => s.user === req.query.user).length;
    res.json({ user: req.query.user, sessions: n });
  });
});

// A sensitive route the step-up tests put behind the gate: a password
// change that needs the app session, counted each time it runs (per
// process), so a test can tell whether a held request ever reached the
// app. The count is a test fixture; nothing is changed.
let passwordChanges = 0;
app.post('/settings/password', (req, res) => {
  if (!req.session.user) {
    return res.status(401).json({ error: 'not logged in' });
  }
  passwordChanges += 1;
  res.json({ ok: true, user: req.session.user, changes: passwordChanges });
});

app.get('/settings/password/count', (req, res) => {
  res.json({ count: passwordChanges });
});

app.post('/logout', (req, res, next) => {
  req.session.destroy((err) => {
    if (err) return next(err);
    res.json({ ok: true });
  });
});

// Errors (a body that does not parse, too large, ...) answer JSON with
// their status, not Express's HTML page.
app.use((err, req, res, next) => { // eslint-disable-line no-unused-vars
  const status = err.status || err.statusCode || 500;
  res.status(status).json({ error: status >= 500 ? 'internal error' : err.message });
});

app.listen(port, '127.0.0.1', () => {
  console.log(`listening ${port}`);
});
