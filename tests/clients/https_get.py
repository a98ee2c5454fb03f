"""GET over HTTPS (or HTTP) with Python's own TLS stack.

usage: https_get.py URL [--ca FILE] [--cert FILE --key FILE] [--token TOKEN]
Prints {"status": N, "body": "..."} (status 0 and "error" when no answer came).
"""
import json
import ssl
import sys
import urllib.error
import urllib.request

url = sys.argv[1]
opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))
context = None
if "--ca" in opts:
    context = ssl.create_default_context(cafile=opts["--ca"])
    if "--cert" in opts:
        context.load_cert_chain(opts["--cert"], opts["--key"])
request = urllib.request.Request(url)
if "--token" in opts:
    request.add_header("Authorization", "Bearer " + opts["--token"])
try:
    with urllib.request.urlopen(request, context=context, timeout=10) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
except Exception as e:  # no answer: TLS refused, connection closed
    print(json.dumps({"status": 0, "body": "", "error": str(e)}))
