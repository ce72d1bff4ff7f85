// Kartu's checks in the citizen's own browser, with WebCrypto only (SHA-256, Ed25519):
// - a receipt (#verify): the leaf hash from the leaf's bytes, the details shown against the
//   bytes, the latest checkpoint's signature under the published key, and the inclusion
//   proof up to the signed root (RFC 9162 §2.1.3.2);
// - the books (#check): the newest checkpoint extends the one this browser saw before,
//   kept in localStorage, by a consistency proof (RFC 9162 §2.1.4.2).
// The messages are the page's own (#messages), in its language; this script holds no text.
'use strict';
(function () {
  var STORE = 'kartu.books';

  function Failure(check) { this.check = check; }

  function hexToBytes(h) {
    if (typeof h !== 'string' || !/^([0-9a-fA-F]{2})*$/.test(h)) throw new Failure('proof');
    var b = new Uint8Array(h.length / 2);
    for (var i = 0; i < b.length; i++) b[i] = parseInt(h.substr(2 * i, 2), 16);
    return b;
  }
  function bytesToHex(b) {
    return Array.prototype.map.call(b, function (x) { return x.toString(16).padStart(2, '0'); }).join('');
  }
  function b64ToBytes(s) {
    var bin = atob(s);
    var b = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) b[i] = bin.charCodeAt(i);
    return b;
  }
  function concat() {
    var n = 0, i, o = 0;
    for (i = 0; i < arguments.length; i++) n += arguments[i].length;
    var out = new Uint8Array(n);
    for (i = 0; i < arguments.length; i++) { out.set(arguments[i], o); o += arguments[i].length; }
    return out;
  }
  function equal(a, b) {
    if (a.length !== b.length) return false;
    for (var i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  async function sha256(b) { return new Uint8Array(await crypto.subtle.digest('SHA-256', b)); }
  function leafHash(leaf) { return sha256(concat(new Uint8Array([0]), leaf)); }
  function nodeHash(l, r) { return sha256(concat(new Uint8Array([1]), l, r)); }
  // Sizes stay below 2^53: halve with arithmetic, not 32-bit shifts.
  function half(x) { return Math.floor(x / 2); }
  function odd(x) { return x % 2 === 1; }
  function powerOfTwo(x) { while (x > 1 && x % 2 === 0) x = x / 2; return x === 1; }

  // RFC 9162 §2.1.3.2: the root an inclusion proof leads to, or a Failure('proof').
  async function rootFromInclusion(index, size, hash, path) {
    if (!(index >= 0 && index < size)) throw new Failure('proof');
    var fn = index, sn = size - 1, r = hash;
    for (var i = 0; i < path.length; i++) {
      if (sn === 0) throw new Failure('proof');
      if (odd(fn) || fn === sn) {
        r = await nodeHash(path[i], r);
        if (!odd(fn)) { while (!(odd(fn) || fn === 0)) { fn = half(fn); sn = half(sn); } }
      } else {
        r = await nodeHash(r, path[i]);
      }
      fn = half(fn); sn = half(sn);
    }
    if (sn !== 0) throw new Failure('proof');
    return r;
  }

  // RFC 9162 §2.1.4.2: whether a consistency proof shows the tree of `second` leaves with
  // root `secondHash` extends the tree of `first` leaves with root `firstHash`.
  async function consistent(first, second, firstHash, secondHash, proof) {
    if (!(first > 0 && first < second)) return false;
    var path = proof.slice();
    if (powerOfTwo(first)) path.unshift(firstHash);
    if (path.length === 0) return false;
    var fn = first - 1, sn = second - 1;
    while (odd(fn)) { fn = half(fn); sn = half(sn); }
    var fr = path[0], sr = path[0];
    for (var i = 1; i < path.length; i++) {
      if (sn === 0) return false;
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(path[i], fr);
        sr = await nodeHash(path[i], sr);
        if (!odd(fn)) { while (!(odd(fn) || fn === 0)) { fn = half(fn); sn = half(sn); } }
      } else {
        sr = await nodeHash(sr, path[i]);
      }
      fn = half(fn); sn = half(sn);
    }
    return sn === 0 && equal(fr, firstHash) && equal(sr, secondHash);
  }

  // A checkpoint (C2SP signed note) checked under a verifier key line
  // `<name>+<8 hex key id>+<base64(0x01 || Ed25519 key)>`: {origin, size, root, time}.
  async function verifyCheckpoint(note, keyLine) {
    // The name holds no '+'; the base64 key may.
    var m = /^([^+\s]+)\+([0-9a-f]{8})\+([A-Za-z0-9+\/=]+)$/.exec(keyLine.trim());
    if (!m) throw new Failure('key');
    var parts = m.slice(1);
    var name = parts[0], keyId = hexToBytes(parts[1]), keyBytes;
    try { keyBytes = b64ToBytes(parts[2]); } catch (e) { throw new Failure('key'); }
    if (keyBytes.length !== 33 || keyBytes[0] !== 1) throw new Failure('key');
    var computedId = (await sha256(concat(new TextEncoder().encode(name + '\n'), keyBytes))).slice(0, 4);
    if (!equal(computedId, keyId)) throw new Failure('key');
    var split = note.indexOf('\n\n');
    if (split < 0) throw new Failure('signature');
    var text = note.slice(0, split + 1);
    var lines = text.split('\n');
    var origin = lines[0], size = Number(lines[1]), root;
    if (origin !== name) throw new Failure('key');
    if (!/^[0-9]+$/.test(lines[1] || '') || !Number.isSafeInteger(size)) throw new Failure('signature');
    try { root = b64ToBytes(lines[2]); } catch (e) { throw new Failure('signature'); }
    var time = '';
    lines.slice(3).forEach(function (l) { if (l.indexOf('time ') === 0) time = l.slice(5); });
    var signature = null;
    note.slice(split + 2).split('\n').forEach(function (l) {
      var prefix = '\u2014 ' + name + ' ';
      if (signature === null && l.indexOf(prefix) === 0) {
        try {
          var sig = b64ToBytes(l.slice(prefix.length));
          if (sig.length === 68 && equal(sig.slice(0, 4), keyId)) signature = sig.slice(4);
        } catch (e) { /* another key's line */ }
      }
    });
    if (signature === null) throw new Failure('signature');
    var key;
    try {
      key = await crypto.subtle.importKey('raw', keyBytes.slice(1), { name: 'Ed25519' }, false, ['verify']);
    } catch (e) { throw new Failure('nocrypto'); }
    var ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, signature, new TextEncoder().encode(text));
    if (!ok || root.length !== 32) throw new Failure('signature');
    return { origin: origin, size: size, root: root, time: time };
  }

  async function fetchText(path) {
    var r;
    try { r = await fetch(path, { cache: 'no-store' }); } catch (e) { throw new Failure('network'); }
    if (r.status === 404 && path.indexOf('/checkpoints/') >= 0) throw new Failure('pending');
    if (!r.ok) throw new Failure('network');
    return r.text();
  }
  async function fetchJson(path, check) {
    var text = await fetchText(path);
    try { return JSON.parse(text); } catch (e) { throw new Failure(check); }
  }
  function hashes(list, check) {
    if (!Array.isArray(list)) throw new Failure(check);
    return list.map(function (h) {
      var b = hexToBytes(h);
      if (b.length !== 32) throw new Failure(check);
      return b;
    });
  }

  // The first fields of an entry's leaf (docs/AUDIT.md): the details the page shows.
  function checkDetails(leaf, d) {
    try {
      var v = new DataView(leaf.buffer, leaf.byteOffset, leaf.byteLength);
      if (leaf[0] !== 1 || leaf[1] !== 1) return false;
      var seq = v.getBigInt64(2), time = v.getBigInt64(10), n = leaf[18];
      var kind = String.fromCharCode.apply(null, leaf.slice(19, 19 + n));
      var o = 19 + n;
      var currency = String.fromCharCode.apply(null, leaf.slice(o, o + 3));
      var amount = v.getBigInt64(o + 3), fee = v.getBigInt64(o + 11);
      return seq === BigInt(d.seq) && time === BigInt(d.timeUs) && kind === d.kind &&
        currency === d.currency && amount === BigInt(d.amountMinor) && fee === BigInt(d.feeMinor);
    } catch (e) { return false; }
  }

  function message(key, values) {
    var li = document.querySelector('#messages li[data-key="' + key + '"]');
    var text = li ? li.textContent : key;
    Object.keys(values || {}).forEach(function (k) { text = text.split('{' + k + '}').join(String(values[k])); });
    return text;
  }
  function show(el, state, key, values) {
    el.dataset.state = state;
    el.dataset.check = key;
    el.textContent = message(key, values);
  }
  function failed(el, e) {
    if (e instanceof Failure) {
      show(el, e.check === 'pending' ? 'pending' : 'failed', e.check, e.values);
    } else {
      show(el, 'failed', 'network');
    }
  }
  function pinnedKey() {
    try { var s = JSON.parse(localStorage.getItem(STORE) || 'null'); return s && s.key; } catch (e) { return null; }
  }

  async function verifyReceipt(section) {
    var status = document.getElementById('verify-status');
    show(status, 'checking', 'checking');
    try {
      if (!window.crypto || !crypto.subtle) throw new Failure('nocrypto');
      var d = section.dataset;
      var leaf = hexToBytes(d.leaf);
      var hash = await leafHash(leaf);
      if (bytesToHex(hash) !== d.leafHash.toLowerCase()) throw new Failure('leaf');
      if (!checkDetails(leaf, d)) throw new Failure('details');
      var got = await Promise.all([fetchText('/v1/audit/checkpoints/latest'), fetchText('/v1/audit/public-key')]);
      var pinned = pinnedKey();
      if (pinned && pinned !== got[1].trim()) throw new Failure('key');
      var cp = await verifyCheckpoint(got[0], got[1]);
      var index = Number(d.leafIndex);
      if (cp.size <= index) throw new Failure('pending');
      var proof = await fetchJson('/v1/audit/proofs/inclusion?leaf_index=' + index + '&tree_size=' + cp.size, 'proof');
      if (proof.leaf_index !== index || proof.tree_size !== cp.size) throw new Failure('proof');
      var root = await rootFromInclusion(index, cp.size, hash, hashes(proof.hashes, 'proof'));
      if (!equal(root, cp.root)) throw new Failure('proof');
      show(status, 'ok', 'ok', { n: d.seq, t: cp.time });
    } catch (e) { failed(status, e); }
  }

  async function checkBooks() {
    var status = document.getElementById('check-status');
    show(status, 'checking', 'checking');
    try {
      if (!window.crypto || !crypto.subtle) throw new Failure('nocrypto');
      var got = await Promise.all([fetchText('/v1/audit/checkpoints/latest'), fetchText('/v1/audit/public-key')]);
      var keyLine = got[1].trim();
      var cp = await verifyCheckpoint(got[0], keyLine);
      var saved = null;
      try { saved = JSON.parse(localStorage.getItem(STORE) || 'null'); } catch (e) { saved = null; }
      var save = function () {
        localStorage.setItem(STORE, JSON.stringify({ key: keyLine, size: cp.size, root: bytesToHex(cp.root) }));
      };
      if (!saved) { save(); show(status, 'ok', 'first', { n: cp.size }); return; }
      if (saved.key !== keyLine) throw new Failure('keychanged');
      var old = hexToBytes(saved.root);
      var fail = function (check) { var f = new Failure(check); f.values = { n: cp.size, m: saved.size }; return f; };
      if (cp.size < saved.size) throw fail('rollback');
      if (cp.size === saved.size) {
        if (!equal(old, cp.root)) throw fail('fork');
        show(status, 'ok', 'same', { n: cp.size });
        return;
      }
      var proof = await fetchJson('/v1/audit/proofs/consistency?first=' + saved.size + '&second=' + cp.size, 'consistency');
      if (proof.first !== saved.size || proof.second !== cp.size) throw fail('consistency');
      if (!(await consistent(saved.size, cp.size, old, cp.root, hashes(proof.hashes, 'consistency')))) throw fail('consistency');
      save();
      show(status, 'ok', 'extends', { n: cp.size, m: saved.size });
    } catch (e) { failed(status, e); }
  }

  // The checks themselves, for anyone's console and for the tests' published vectors.
  window.kartuVerify = {
    leafHash: leafHash,
    rootFromInclusion: rootFromInclusion,
    consistent: consistent,
    verifyCheckpoint: verifyCheckpoint
  };

  var receipt = document.getElementById('verify');
  if (receipt) verifyReceipt(receipt);
  var button = document.getElementById('check-button');
  if (button) {
    button.disabled = false;
    button.addEventListener('click', checkBooks);
    var status = document.getElementById('check-status');
    status.dataset.state = 'ready';
    status.textContent = '';
    if (location.hash === '#check') checkBooks();
  }
})();
