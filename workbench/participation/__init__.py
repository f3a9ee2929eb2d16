"""Human participants: entry (invites, Prolific), assignment, the session flow and the chat.

Pages call these functions; nothing here imports streamlit.
"""

from workbench.participation.assignment import assign, latin_square_order
from workbench.participation.chat import (
    ReplyError,
    discard_unsent,
    keep_unsent,
    rate_reply,
    send_message,
    set_model_factory,
    stream_reply,
)
from workbench.participation.entry import (
    create_invites,
    enter_prolific,
    hash_token,
    invite_url,
    participant_for_token,
    prolific_url,
)
from workbench.participation.flow import (
    ParticipantView,
    abandon,
    expire_idle,
    finish_instructions,
    finish_task,
    give_consent,
    open_participant,
    participant_view,
    redirect_tag,
    submit_post_task,
    submit_profile,
)

__all__ = [
    "ReplyError",
    "abandon",
    "assign",
    "create_invites",
    "discard_unsent",
    "enter_prolific",
    "expire_idle",
    "finish_instructions",
    "finish_task",
    "give_consent",
    "hash_token",
    "invite_url",
    "keep_unsent",
    "latin_square_order",
    "open_participant",
    "participant_for_token",
    "participant_view",
    "prolific_url",
    "redirect_tag",
    "rate_reply",
    "send_message",
    "set_model_factory",
    "stream_reply",
    "submit_post_task",
    "submit_profile",
    "ParticipantView",
]
