"""Tools for the tool-calling tests, and the tiny model in each family's tool format: its chat template
replaced by that family's tool template, written out here in the families' own words (random weights write
nonsense, so whatever a call holds it holds because the grammar made it)."""
import json
import shutil

from tests.support.models import TINY, catalog_of

VARIANT = f"{TINY}-q4f32_1"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city, for the next days",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city", "days"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                                       "required": ["zone"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris this week, and the time in CET?"}]

QWEN_TOOLS = (
    "{%- if tools %}<|im_start|>system\n{{ messages[0]['content'] if messages[0]['role'] == 'system' else 'You are a helpful "
    "assistant.' }}\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
    "with function signatures within <tools></tools> XML tags:\n<tools>{% for tool in tools %}\n{{ tool | tojson }}"
    "{% endfor %}\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
    "</tool_call><|im_end|>\n{% elif messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}"
    "<|im_end|>\n{% endif %}{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'assistant' "
    "and not message.tool_calls) %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% elif message.role "
    "== 'assistant' %}<|im_start|>assistant\n{{ message.content }}{%- for tool_call in message.tool_calls %}\n<tool_call>\n"
    "{\"name\": \"{{ tool_call.function.name }}\", \"arguments\": {{ tool_call.function.arguments | tojson }}}\n"
    "</tool_call>{% endfor %}<|im_end|>\n{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n"
    "{{ message.content }}\n</tool_response><|im_end|>\n{% endif %}{%- endfor %}{%- if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")
MISTRAL_TOOLS = (
    "{{ bos_token }}{% for message in messages %}{% if message.role == 'user' %}{% if tools and loop.last %}"
    "[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST] {{ message.content }}[/INST]"
    "{% elif message.role == 'assistant' and message.tool_calls %}[TOOL_CALLS] "
    "{{ message.tool_calls | map(attribute='function') | list | tojson }}{{ eos_token }}"
    "{% elif message.role == 'assistant' %}{{ message.content }}{{ eos_token }}{% elif message.role == 'tool' %}"
    "[TOOL_RESULTS] {{ message.content }}[/TOOL_RESULTS]{% endif %}{% endfor %}")
LLAMA31_TOOLS = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ 'ipython' if message.role == 'tool' else "
    "message.role }}<|end_header_id|>\n\n{% if tools and loop.last and message.role == 'user' %}Given the following "
    "functions, please respond with a JSON for a function call with its proper arguments that best answers the given "
    "prompt.\n\nRespond in the format {\"name\": function name, \"parameters\": dictionary of argument name and its "
    "value}. Do not use variables.\n\n{% for t in tools %}{{ t | tojson }}\n\n{% endfor %}{% endif %}"
    "{% if message.tool_calls %}{% for c in message.tool_calls %}{\"name\": \"{{ c.function.name }}\", \"parameters\": "
    "{{ c.function.arguments | tojson }}}{% endfor %}{% else %}{{ message.content }}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
TEMPLATES = {"hermes": QWEN_TOOLS, "mistral": MISTRAL_TOOLS, "llama3_json": LLAMA31_TOOLS}


def family_folders(tiny_models, tmp_path_factory) -> dict:
    """A models folder per tool format: the tiny variant with that family's tool template (the generic one is
    the tiny model's own, which takes no tools)."""
    folders = {"generic": tiny_models}
    for fmt, template in TEMPLATES.items():
        folder = tmp_path_factory.mktemp(fmt)
        catalog = catalog_of(tiny_models)
        catalog["models"] = [m for m in catalog["models"] if m["id"] == VARIANT]
        (folder / "manifest.json").write_text(json.dumps(catalog))
        shutil.copytree(tiny_models / VARIANT, folder / VARIANT)
        config = json.loads((folder / VARIANT / "mlc-chat-config.json").read_text())
        (folder / VARIANT / "mlc-chat-config.json").write_text(json.dumps({**config, "chat_template": template}))
        folders[fmt] = folder
    return folders
