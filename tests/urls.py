"""The test views, and the example site's URLs for the tests of the example site."""

from django.contrib.admin.views.decorators import staff_member_required
from django.urls import include, path

from example_site.life import views as life
from trio_c10k import metrics_view

from . import views

urlpatterns = [
    path("", include("example_site.urls")),
    path("t/hello/", views.hello),
    path("t/whoami/", views.whoami),
    path("t/environ/", views.environ),
    path("t/echo-body/", views.echo_body),
    path("t/stream/<str:key>/", views.stream),
    path("t/wait/<str:key>/", views.wait),
    path("t/file/", views.file),
    path("t/error/", views.error),
    path("t/ws/echo/", views.ws_echo),
    path("t/ws/hello/", views.ws_hello),
    path("t/ws/return/", views.ws_return),
    path("t/ws/raise/", views.ws_raise),
    path("t/ws/subprotocol/", views.ws_subprotocol),
    path("t/ws/info/<int:number>/", views.ws_info, name="ws-info"),
    path("t/ws/watch/<str:key>/", views.ws_watch),
    path("t/ws/flood/<str:key>/", views.ws_flood),
    path("t/ws/room/", views.ws_room),
    path("t/ws/broadcast/", views.ws_broadcast),
    path("t/login/", views.login),
    path("t/ws/group/<str:name>/", views.ws_group),
    path("t/ws/relay/<str:name>/", views.ws_relay),
    path("t/group-broadcast/<str:name>/", views.group_broadcast),
    path("t/ws/db/<str:prefix>/", views.ws_db),
    path("t/ws/burst/<int:count>/", views.ws_burst),
    path("t/ws/bursts/", views.ws_bursts),
    path("t/ws/deaf/", views.ws_deaf),
    path("t/pid/", views.pid),
    path("t/ws/pid/", views.ws_pid),
    path("t/ws/group-pid/<str:name>/", views.ws_group_pid),
    path("t/silent/reset/", life.reset),
    path("t/silent/worker/", views.silent_worker),
    path("t/big/<int:size>/", views.big),
    path("t/stream-endless/<str:key>/", views.stream_endless),
    path("t/big-file/<int:offset>/", views.big_file),
    path("t/input-kind/", views.input_kind),
    path("t/metrics/", metrics_view),
    path("t/metrics-staff/", staff_member_required(metrics_view, login_url="/t/login/")),
]
