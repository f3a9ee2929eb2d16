"""Human participants: entry (invites, Prolific), assignment, the session flow and the chat; for
researchers, a study's progress and its transcripts.

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
    get_participant,
    give_consent,
    open_participant,
    participant_view,
    redirect_tag,
    submit_post_study,
    submit_post_task,
    submit_pre_study,
    submit_profile,
)
from workbench.participation.progress import StudyProgress, study_progress
from workbench.participation.questionnaires import (
    Questionnaires,
    load_questionnaires,
    parse_questionnaires,
)
from workbench.participation.transcripts import (
    Comparison,
    comparison,
    filter_transcripts,
    matched_conversations,
    transcript,
    transcripts_df,
)

__all__ = [
    "Comparison",
    "ReplyError",
    "StudyProgress",
    "abandon",
    "assign",
    "comparison",
    "create_invites",
    "discard_unsent",
    "enter_prolific",
    "expire_idle",
    "filter_transcripts",
    "finish_instructions",
    "finish_task",
    "get_participant",
    "give_consent",
    "hash_token",
    "invite_url",
    "keep_unsent",
    "latin_square_order",
    "matched_conversations",
    "open_participant",
    "participant_for_token",
    "participant_view",
    "prolific_url",
    "redirect_tag",
    "rate_reply",
    "send_message",
    "set_model_factory",
    "stream_reply",
    "study_progress",
    "submit_post_study",
    "submit_post_task",
    "submit_pre_study",
    "Questionnaires",
    "load_questionnaires",
    "parse_questionnaires",
    "submit_profile",
    "transcript",
    "transcripts_df",
    "ParticipantView",
]
