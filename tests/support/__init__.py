"""What the tests share, by concern; conftest.py files only hold the fixtures that call it, and test modules
import from here, never from one another (tests/test_layout.py checks it).

  repo.py         the repository's paths and the route decision's schema
  browsers.py     Debian's Chromium (flags, PageWatch, the adapter's label, seeded self-checks)
  firefox.py      Debian's Firefox ESR over WebDriver BiDi
  webkit.py       WebKitGTK's MiniBrowser over classic WebDriver, on its own Xvfb display
  pages.py        the chat page's page object, and the browser engine through the page's Seam client
  servers.py      static servers, the app server in a thread (with Faults), `make serve` in a process, raw HTTP
  api.py          asking a server and checking its answers and errors (OpenAI's shape)
  probes.py       the page's probe reports, as the router tests send them
  models.py       the real and the tiny model: where they are built, their catalogs, subsets of them
  tiny_llama.py   the tiny random Llama's checkpoint
  tiny_families.py  tiny checkpoints of the other families, and their builds
  logits.py       numpy references of logits and attention, and their tolerances (logits.html runs a build)
  structured.py   schemas and prompts for structured output, and schemas both paths refuse
  node.py         the page's pure JS modules under node
  selftest_model.py  the toolchain self-test's model (selftest.html runs it)
"""
