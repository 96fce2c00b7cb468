#!/usr/bin/python3
"""Writes PSKC seed files with the python3-pskc library, with fresh random
secrets, serial numbers and counters, and expected.json that says what each
file holds (or why it must be refused).

Usage: /usr/bin/python3 generate.py OUTPUT_DIR

The files:
  plain-hotp.pskc      HOTP tokens, unencrypted
  plain-totp.pskc      TOTP tokens (30 and 60 s, 6 and 8 digits, SHA1/256/512)
  psk-hotp.pskc        HOTP, secrets under a pre-shared AES-128-CBC key,
                       HMAC-SHA1 with an encrypted MACKey
  psk-totp.pskc        TOTP, secret, Time, TimeInterval and TimeDrift all
                       encrypted
  psk-no-mac-key.pskc  the older form: no MACKey, the MAC keyed with the
                       pre-shared key itself
  psk.hex              the pre-shared key of the psk-* files, in hex
  pbkdf2.pskc          key derived from a password: refused
  aes256.pskc          AES-256-CBC: refused
  kw-aes128.pskc       AES key wrap: refused
"""

import binascii
import json
import os
import random
import sys
import xml.etree.ElementTree as ElementTree

import pskc

HOTP = 'urn:ietf:params:xml:ns:keyprov:pskc:hotp'
TOTP = 'urn:ietf:params:xml:ns:keyprov:pskc:totp'
PSKC_NS = 'urn:ietf:params:xml:ns:keyprov:pskc'

rng = random.SystemRandom()
used_serials = set()


def new_serial():
    """A Feitian-like 13-digit serial number, unique in this run."""
    while True:
        serial = str(rng.randrange(10**12, 10**13))
        if serial not in used_serials:
            used_serials.add(serial)
            return serial


def add_token(container, kind, digits=6, suite=None, counter=None,
              period=None, drift=None, secret_length=20, model='c200'):
    """Adds a token to `container` and returns what a reader must find."""
    secret = os.urandom(secret_length)
    serial = new_serial()
    key = container.add_key(
        id=serial, serial=serial, secret=secret,
        manufacturer='Feitian Technologies', model=model,
        algorithm=HOTP if kind == 'hotp' else TOTP,
        response_length=digits, response_encoding='DECIMAL')
    if suite:
        key.algorithm_suite = suite
    expected = {
        'serial': serial,
        'manufacturer': 'Feitian Technologies',
        'model': model,
        'kind': kind,
        'algorithm': (suite or 'SHA1').replace('HMAC-', ''),
        'digits': digits,
        'secret_hex': binascii.hexlify(secret).decode(),
    }
    if kind == 'hotp':
        key.counter = counter
        expected['counter'] = counter or 0
    else:
        key.time_offset = 0
        key.time_interval = period
        key.time_drift = drift
        expected['period'] = period or 30
        expected['drift'] = drift or 0
    return expected


def hotp_tokens(container):
    return [
        add_token(container, 'hotp', counter=0),
        add_token(container, 'hotp', counter=rng.randrange(1, 100000)),
        add_token(container, 'hotp', digits=8, suite='HMAC-SHA256',
                  counter=rng.randrange(2**32, 2**48), secret_length=32),
        add_token(container, 'hotp', secret_length=16, model='c100'),
    ]


def totp_tokens(container):
    return [
        add_token(container, 'totp', period=60),
        add_token(container, 'totp', period=30, digits=8, suite='SHA256',
                  secret_length=32),
        add_token(container, 'totp', period=60, suite='SHA512',
                  secret_length=64, drift=rng.randrange(1, 5)),
        add_token(container, 'totp'),
    ]


def strip_mac_key(path):
    """Removes MACMethod/MACKey, leaving the older form."""
    ElementTree.register_namespace('pskc', PSKC_NS)
    tree = ElementTree.parse(path)
    method = tree.getroot().find('{%s}MACMethod' % PSKC_NS)
    method.remove(method.find('{%s}MACKey' % PSKC_NS))
    tree.write(path, xml_declaration=True, encoding='UTF-8')


def main(out):
    os.makedirs(out, exist_ok=True)
    psk = os.urandom(16)
    with open(os.path.join(out, 'psk.hex'), 'w') as f:
        f.write(binascii.hexlify(psk).decode() + '\n')
    files = {}

    def write(name, container, tokens=None, psk_file=None, refused=None):
        container.write(os.path.join(out, name))
        entry = {'psk_file': psk_file}
        if refused:
            entry['refused'] = refused
        else:
            entry['tokens'] = tokens
        files[name] = entry

    c = pskc.PSKC()
    write('plain-hotp.pskc', c, hotp_tokens(c))

    c = pskc.PSKC()
    write('plain-totp.pskc', c, totp_tokens(c))

    c = pskc.PSKC()
    tokens = hotp_tokens(c)
    c.encryption.setup_preshared_key(key=psk, key_name='Pre-shared-key')
    write('psk-hotp.pskc', c, tokens, psk_file='psk.hex')

    c = pskc.PSKC()
    tokens = totp_tokens(c)
    c.encryption.setup_preshared_key(
        key=psk, fields=['secret', 'time_offset', 'time_interval',
                         'time_drift'])
    write('psk-totp.pskc', c, tokens, psk_file='psk.hex')

    c = pskc.PSKC()
    tokens = hotp_tokens(c) + totp_tokens(c)
    c.encryption.setup_preshared_key(key=psk, fields=['secret', 'counter'])
    c.mac.key = psk
    write('psk-no-mac-key.pskc', c, tokens, psk_file='psk.hex')
    strip_mac_key(os.path.join(out, 'psk-no-mac-key.pskc'))

    c = pskc.PSKC()
    hotp_tokens(c)
    c.encryption.setup_pbkdf2('a passphrase', iterations=1000)
    write('pbkdf2.pskc', c, psk_file='psk.hex', refused='pbkdf2')

    c = pskc.PSKC()
    hotp_tokens(c)
    c.encryption.setup_preshared_key(
        key=os.urandom(32), algorithm='aes256-cbc')
    write('aes256.pskc', c, psk_file='psk.hex', refused='encryption')

    c = pskc.PSKC()
    hotp_tokens(c)
    c.encryption.setup_preshared_key(key=psk, algorithm='kw-aes128')
    write('kw-aes128.pskc', c, psk_file='psk.hex', refused='encryption')

    # Each file as the library reads it back: the same tokens.
    for name, entry in files.items():
        if 'tokens' not in entry:
            continue
        back = pskc.PSKC(os.path.join(out, name))
        if entry['psk_file']:
            back.encryption.key = psk
        read = {k.serial: binascii.hexlify(k.secret).decode()
                for k in back.keys}
        want = {t['serial']: t['secret_hex'] for t in entry['tokens']}
        assert read == want, name

    with open(os.path.join(out, 'expected.json'), 'w') as f:
        json.dump({'files': files}, f, indent=2, sort_keys=True)
        f.write('\n')


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: generate.py OUTPUT_DIR')
    main(sys.argv[1])
