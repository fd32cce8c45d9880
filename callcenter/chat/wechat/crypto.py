"""Callback signatures and the AES message crypto of safe mode, on top of wechatpy.

- URL/plain signature: SHA-1 over the lexically sorted ``token, timestamp, nonce``; safe mode's
  ``msg_signature`` adds the ``Encrypt`` text to the sorted list (WeChat's "消息加解密" docs). Computed
  with wechatpy's WeChatSigner, compared in constant time (wechatpy's own checks use ``!=``).
- AES-256-CBC, IV = the key's first 16 bytes, PKCS#7 padding to 32 bytes; plaintext = 16 random bytes
  + 4-byte network-order length + message + AppId (wechatpy's PrpCrypto). A key rotation keeps the
  previous EncodingAESKey: decryption tries the current key, then the previous one.

wechatpy's decrypt raises whatever the garbage provokes when the key is wrong (struct.error,
UnicodeDecodeError, ValueError, IndexError) and InvalidAppIdException when the trailing AppId differs:
both are mapped to this module's two errors here.
"""

from __future__ import annotations

import base64
import hmac
import struct
from collections.abc import Sequence

from wechatpy.crypto import PrpCrypto
from wechatpy.exceptions import InvalidAppIdException
from wechatpy.utils import WeChatSigner

from callcenter.chat.wechat.xmlsafe import build_xml

__all__ = ["AppIdMismatch", "DecryptError", "MessageCrypto", "check_signature", "signature"]


class DecryptError(ValueError):
    """No configured key decrypts the message."""


class AppIdMismatch(ValueError):
    """The message decrypted but names another AppId (it was meant for another account)."""


def signature(token: str, *parts: str) -> str:
    """SHA-1 hex over ``token`` and ``parts`` sorted as bytes and concatenated."""
    signer = WeChatSigner()
    signer.add_data(token, *parts)
    return str(signer.signature)


def check_signature(token: str, given: str | None, *parts: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(signature(token, *parts), given.strip().lower())


def _key(encoding_aes_key: str) -> bytes:
    key = base64.b64decode(encoding_aes_key + "=")
    if len(key) != 32:
        raise ValueError("an EncodingAESKey decodes to 32 bytes")
    return key


class MessageCrypto:
    """One account's safe-mode crypto: ``keys`` = current EncodingAESKey first, then the previous one."""

    def __init__(self, token: str, app_id: str, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("expected at least one EncodingAESKey")
        self.token = token
        self.app_id = app_id
        self._keys = [_key(k) for k in keys]

    def decrypt(self, encrypted: str) -> str:
        """The inner XML. Raises AppIdMismatch or DecryptError."""
        other_app = False
        for key in self._keys:
            try:
                return str(PrpCrypto(key).decrypt(encrypted, self.app_id))
            except InvalidAppIdException:
                other_app = True
            except (ValueError, struct.error, IndexError, TypeError):  # UnicodeDecodeError is a ValueError
                continue
        if other_app:
            raise AppIdMismatch("the message names another AppId")
        raise DecryptError("no EncodingAESKey decrypts the message")

    def encrypt(self, plaintext: str) -> str:
        """Base64 ciphertext with the current key (what goes in ``<Encrypt>``)."""
        return bytes(PrpCrypto(self._keys[0]).encrypt(plaintext, self.app_id)).decode("ascii")

    def envelope(self, reply_xml: str, timestamp: str, nonce: str) -> str:
        """A safe-mode passive reply: ``<Encrypt>``, ``<MsgSignature>``, ``<TimeStamp>``, ``<Nonce>``."""
        encrypted = self.encrypt(reply_xml)
        sig = signature(self.token, timestamp, nonce, encrypted)
        return build_xml(
            [("Encrypt", encrypted), ("MsgSignature", sig), ("TimeStamp", int(timestamp)), ("Nonce", nonce)]
        )
