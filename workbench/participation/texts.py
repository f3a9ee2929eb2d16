"""Interface texts of the participant flow in English and Chinese.

Study-specific texts (consent, instructions) come from StudySettings; these are the fixed labels.
"""

from __future__ import annotations

from db.errors import UserInputError

UI: dict[str, dict[str, str]] = {
    "en": {
        "title": "Research study",
        "consent_header": "Consent",
        "agree": "I agree to take part",
        "decline": "I do not agree",
        "instructions_header": "Instructions",
        "continue": "Continue",
        "profile_header": "About you",
        "profile_intro": "Tell us a little about yourself. The assistant will not see your answers directly; they "
        "describe the person you play in the tasks (yourself).",
        "task_header": "Task {position} of {n}",
        "task_card": "Your task",
        "scenario": "Scenario",
        "your_profile": "Your profile",
        "chat_placeholder": "Type your message to the assistant",
        "rate_header": "Rate this reply",
        "hallucination": "Did this reply contain made-up or false information?",
        "hallucination_yes": "Yes",
        "hallucination_no": "No",
        "hallucination_cant_tell": "Can't tell",
        "satisfaction": "How satisfied are you with this reply? (1 = not at all, 5 = very)",
        "reason": "Reason (optional)",
        "save_rating": "Save rating",
        "rated": "Your rating: made-up information: {h}; satisfaction: {s}/5",
        "rate_first": "Please rate the assistant's last reply before you continue.",
        "finish": "Finish this task",
        "finish_hint": "You can finish once you have sent {n} messages.",
        "finish_hint_one": "You can finish once you have sent a message.",
        "max_reached": "You reached the maximum number of messages for this task. Please finish it.",
        "thinking": "The assistant is replying...",
        "llm_error": "The assistant is temporarily unavailable. Your message is saved; please try again in a moment.",
        "retry": "Try again",
        "post_header": "About the conversation you just had",
        "memorization": "Did the assistant forget things you had said earlier?",
        "detail": "How detailed were the assistant's answers?",
        "availability": "How useful were the answers in practice?",
        "diversity": "How varied were the options the assistant offered?",
        "free_text": "Anything else you want to tell us (optional)",
        "attention": 'To show that you read the questions, please choose "Blue" here.',
        "submit": "Submit",
        "answer_all": "Please answer every question.",
        "missing_answers": "Please answer every question. Still open: {items}",
        "missing_profile": "Please answer: {items}",
        "done_header": "Thank you!",
        "done_text": "You have finished the study. Your completion code is:",
        "prolific_return": "Return to Prolific",
        "prolific_redirecting": "You will be taken back to Prolific in {seconds} seconds.",
        "screened_out_header": "Thank you",
        "screened_out_text": "You chose not to take part. Your code is:",
        "full_text": "Sorry, this study is full at the moment. Your code is:",
        "expired_text": "This session expired after a long time without activity.",
        "invalid_link": "This link is not valid. Please use the link you were given.",
        # Refusals of the participant's actions (ParticipantError keys)
        "no_task": "There is no task in progress.",
        "msg_empty": "The message is empty.",
        "msg_too_long": "Your message has {length} characters; the limit is {limit}. Please shorten it and send "
        "it again.",
        "task_ended": "This task has ended.",
        "reply_pending": "The assistant has not replied to your previous message yet (it may have been sent from "
        "another tab or window). Please wait for the reply, then send this message again.",
        "msg_limit": "This task has reached its maximum number of messages.",
        "rate_missing_hallucination": "Please say whether the reply contained made-up information.",
        "rate_missing_satisfaction": "Please choose a satisfaction from 1 to 5.",
        "no_such_reply": "There is no such reply to rate.",
        "step_done": "This step is already done; the page shows where you are now.",
        "choose_option": "Please choose one of the options for: {label}",
        "choose_options": "Please choose from the options for: {label}",
        "whole_number": "Please enter a whole number for: {label}",
        "number_range": "{label}: please enter a number from {min} to {max}",
        "number_min": "{label}: please enter a number of at least {min}",
        "number_max": "{label}: please enter a number of at most {max}",
        "a_number": "Please enter a number for: {label}",
        "pre_study_header": "Before we start",
        "post_study_header": "About the study as a whole",
        "placeholder_one": "Choose an option",
        "placeholder_many": "Choose options",
        "unsent_label": "Your message (not sent)",
        "unsent_hint": "Your text is kept below: copy it, or edit it here and send it again.",
        "db_unsent": "The study could not be reached when you sent this message, so it was not saved.",
        "send_again": "Send",
        "discard": "Discard",
        "expired_unsent": "The message you had typed was not sent. Here it is, so you can copy it:",
        "expired_contact": "If you want to continue or have questions, please contact the research team:",
        "expired_no_contact": "If you want to continue, please contact the person who sent you the link to this "
        "study.",
        "expired_prolific": "Please go back to Prolific with the code below. If you have questions, message the "
        "researchers through Prolific.",
        "prolific_bad_link": "This link has no valid {what}. Please open the study again from Prolific.",
        "too_many_entries": "Many people are joining this study right now. Please wait a minute and open the "
        "link again.",
        "prolific_other_session": "You have already started this study in another Prolific session. If you have "
        "questions, message the researchers through Prolific.",
    },
    "zh": {
        "title": "研究项目",
        "consent_header": "知情同意",
        "agree": "我同意参加",
        "decline": "我不同意",
        "instructions_header": "说明",
        "continue": "继续",
        "profile_header": "关于你",
        "profile_intro": "请简单介绍一下你自己。助手不会直接看到这些回答；它们描述你在任务中扮演的人（你自己）。",
        "task_header": "任务 {position} / {n}",
        "task_card": "你的任务",
        "scenario": "场景",
        "your_profile": "你的画像",
        "chat_placeholder": "输入你要发给助手的消息",
        "rate_header": "评价这条回复",
        "hallucination": "这条回复是否包含编造或错误的信息？",
        "hallucination_yes": "是",
        "hallucination_no": "否",
        "hallucination_cant_tell": "无法判断",
        "satisfaction": "你对这条回复的满意程度？（1 = 很不满意，5 = 非常满意）",
        "reason": "原因（可选）",
        "save_rating": "保存评价",
        "rated": "你的评价：编造信息：{h}；满意度：{s}/5",
        "rate_first": "请先评价助手的上一条回复再继续。",
        "finish": "结束本任务",
        "finish_hint": "发送 {n} 条消息后可以结束。",
        "finish_hint_one": "发送 1 条消息后可以结束。",
        "max_reached": "本任务的消息数已达上限，请结束本任务。",
        "thinking": "助手正在回复……",
        "llm_error": "助手暂时无法回复。你的消息已保存，请稍后重试。",
        "retry": "重试",
        "post_header": "关于刚才的对话",
        "memorization": "助手是否忘记了你之前说过的内容？",
        "detail": "助手的回答有多详细？",
        "availability": "这些回答在实际中有多有用？",
        "diversity": "助手提供的选项有多丰富？",
        "free_text": "其他想告诉我们的（可选）",
        "attention": "为表明你认真阅读了问题，请在此选择“蓝色”。",
        "submit": "提交",
        "answer_all": "请回答所有问题。",
        "missing_answers": "请回答所有问题。尚未回答：{items}",
        "missing_profile": "请回答：{items}",
        "done_header": "谢谢！",
        "done_text": "你已完成本研究。你的完成码是：",
        "prolific_return": "返回 Prolific",
        "prolific_redirecting": "{seconds} 秒后将自动返回 Prolific。",
        "screened_out_header": "谢谢",
        "screened_out_text": "你选择不参加。你的代码是：",
        "full_text": "抱歉，本研究目前已满。你的代码是：",
        "expired_text": "由于长时间没有操作，本次会话已过期。",
        "invalid_link": "链接无效，请使用你收到的链接。",
        "no_task": "当前没有进行中的任务。",
        "msg_empty": "消息为空。",
        "msg_too_long": "你的消息有 {length} 个字符，上限为 {limit} 个。请缩短后重新发送。",
        "task_ended": "本任务已结束。",
        "reply_pending": "助手还没有回复你的上一条消息（它可能是从另一个标签页或窗口发送的）。请等回复出现后再发送这条消息。",
        "msg_limit": "本任务的消息数已达上限。",
        "rate_missing_hallucination": "请说明这条回复是否包含编造的信息。",
        "rate_missing_satisfaction": "请选择 1 到 5 的满意度。",
        "no_such_reply": "没有这条可评价的回复。",
        "step_done": "这一步已经完成；页面显示的是你现在所在的步骤。",
        "choose_option": "请为以下问题选择一个选项：{label}",
        "choose_options": "请从选项中选择：{label}",
        "whole_number": "请为以下问题输入整数：{label}",
        "number_range": "{label}：请输入 {min} 到 {max} 之间的数字",
        "number_min": "{label}：请输入不小于 {min} 的数字",
        "number_max": "{label}：请输入不大于 {max} 的数字",
        "a_number": "请为以下问题输入数字：{label}",
        "pre_study_header": "开始之前",
        "post_study_header": "关于整个研究",
        "placeholder_one": "请选择",
        "placeholder_many": "请选择（可多选）",
        "unsent_label": "你的消息（未发送）",
        "unsent_hint": "你输入的内容保留在下方：可以复制，或在此修改后重新发送。",
        "db_unsent": "发送这条消息时无法连接到研究服务器，因此消息没有保存。",
        "send_again": "发送",
        "discard": "丢弃",
        "expired_unsent": "你刚输入的消息没有发送。内容如下，方便你复制：",
        "expired_contact": "如需继续或有疑问，请联系研究团队：",
        "expired_no_contact": "如需继续，请联系向你发送本研究链接的人。",
        "expired_prolific": "请使用下面的代码返回 Prolific。如有疑问，请通过 Prolific 联系研究人员。",
        "prolific_bad_link": "此链接缺少有效的 {what}。请从 Prolific 重新打开本研究。",
        "too_many_entries": "目前加入本研究的人很多。请等待一分钟后重新打开链接。",
        "prolific_other_session": "你已在另一个 Prolific 会话中开始了本研究。如有疑问，请通过 Prolific 联系研究人员。",
    },
}

# The post-task questionnaire moved to questionnaires.yaml (workbench.participation.questionnaires);
# these names are still importable from here, worked out from the bundled file (see __getattr__).
_REFERENCE_NAMES = ("POST_TASK_ITEMS", "ATTENTION_OPTIONS", "ATTENTION_EXPECTED")
HALLUCINATION_VALUES = ("yes", "no", "cant_tell")


def __getattr__(name: str):
    """The reference post-task items in the old shapes: POST_TASK_ITEMS {item: {lang: {value: text}}},
    ATTENTION_OPTIONS {lang: {value: text}} and ATTENTION_EXPECTED (read lazily: the questionnaire
    module imports this one)."""
    if name not in _REFERENCE_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from workbench.participation.questionnaires import load_questionnaires

    items = load_questionnaires().post_task
    attention = next(it for it in items if it.type == "attention")
    if name == "ATTENTION_EXPECTED":
        return attention.expected
    if name == "ATTENTION_OPTIONS":
        return {lang: attention.options_in(lang) for lang in ("en", "zh")}
    return {
        it.name: {lang: it.options_in(lang) for lang in ("en", "zh")} for it in items if it.type == "single"
    }


def ui(language: str) -> dict[str, str]:
    return UI.get(language, UI["en"])


def finish_hint(language: str, n: int) -> str:
    """ "You can finish once you have sent N messages", with the singular for one."""
    T = ui(language)
    return T["finish_hint_one"] if n == 1 else T["finish_hint"].format(n=n)


def message(key: str, language: str, **params: object) -> str:
    """The interface text ``key`` in ``language`` with ``params`` filled in."""
    return ui(language)[key].format(**params)


class ParticipantError(UserInputError):
    """A refusal shown to a participant, worded in their language. The key and values are kept so a
    page (or a test) can word it again in another language with ``text(language)``."""

    def __init__(self, key: str, language: str = "en", **params: object):
        self.key, self.params = key, params
        super().__init__(message(key, language, **params))

    def text(self, language: str) -> str:
        return message(self.key, language, **self.params)
