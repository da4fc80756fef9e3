import threading

from django.conf import settings
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.views import LoginView
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST


def no_csrf(view):
    """The tests post forms without CSRF tokens, so the login and logout
    views are exempt. csrf_exempt alone is not enough for LoginView: its
    dispatch carries csrf_protect itself, which checks the token whatever
    the middleware says (and there is no CsrfViewMiddleware here at all).
    _dont_enforce_csrf_checks is the switch Django's own test client
    flips for that check."""

    @csrf_exempt
    def wrapped(request, *args, **kwargs):
        request._dont_enforce_csrf_checks = True
        return view(request, *args, **kwargs)

    return wrapped


class InPlaceLoginView(LoginView):
    """The vulnerable variant: logs the user in to the session the client
    already had. django.contrib.auth.login() would cycle the session key
    of an anonymous session; here that is switched off for this request,
    so a session id planted before the login stays valid after it."""

    def form_valid(self, form):
        self.request.session.cycle_key = lambda: None
        return super().form_valid(form)


login = no_csrf((InPlaceLoginView if settings.LOGIN_MODE == "inplace" else LoginView).as_view())


@no_csrf
@require_POST
def logout(request):
    auth_logout(request)
    return JsonResponse({"ok": True})


@require_GET
def home(request):
    request.session["seen"] = True  # an anonymous visitor gets a session cookie too
    name = request.user.get_username() if request.user.is_authenticated else "anonymous"
    return HttpResponse(f"home {name}", content_type="text/plain; charset=utf-8")


@require_GET
def me(request):
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not logged in"}, status=401)
    return JsonResponse({"id": request.user.get_username()})


@no_csrf
def magic(request):
    """A custom view that logs in on a route nobody configured as a login:
    a magic link (POST or GET with the name and a token). The token is the
    password here; what matters is that django.contrib.auth.login() runs
    outside LoginView and answers a redirect that names nobody."""
    from django.contrib.auth import authenticate, login as auth_login
    from django.shortcuts import redirect

    data = request.POST if request.method == "POST" else request.GET
    user = authenticate(request, username=data.get("username", ""), password=data.get("password", ""))
    if user is None:
        return JsonResponse({"error": "invalid link"}, status=403)
    auth_login(request, user)
    return redirect("/")


# A sensitive route the step-up tests put behind the gate: a password
# change that needs the app session, counted each time it runs (per
# process, under a lock: runserver is threaded), so a test can tell whether
# a held request ever reached the app. Nothing is changed.
_password_changes = 0
_password_lock = threading.Lock()


@no_csrf
@require_POST
def change_password(request):
    global _password_changes
    if not request.user.is_authenticated:
        return JsonResponse({"error": "not logged in"}, status=401)
    with _password_lock:
        _password_changes += 1
        n = _password_changes
    return JsonResponse({"ok": True, "user": request.user.get_username(), "changes": n})


@require_GET
def password_change_count(request):
    with _password_lock:
        return JsonResponse({"count": _password_changes})
